import sys

if sys.argv[1:2] == ["join"]:
    # Before the imports below, so that the forkserver's own imports run
    # alongside them (see forkserver.py).
    from .forkserver import start_early

    start_early()

from .cli import main  # noqa: E402

main()
