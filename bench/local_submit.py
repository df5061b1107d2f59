"""The local reference for `submit` from the command line: the same work
with no broker, as a user would write it with `multiprocessing.Pool`.

    python -m bench.local_submit ARG...

reads each ARG as a JSON literal, runs `square` on a `Pool(2)` and prints
the results in order, one per line, like `submit square ARG...` does.
"""

from __future__ import annotations

import json
import multiprocessing
import sys

from bench.tasks import square


def main() -> None:
    values = [json.loads(a) for a in sys.argv[1:]]
    with multiprocessing.Pool(2) as pool:
        results = pool.map(square, values)
    sys.stdout.write("".join(f"{json.dumps(r)}\n" for r in results))


if __name__ == "__main__":
    main()
