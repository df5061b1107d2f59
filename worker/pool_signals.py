"""Imported by the worker's forkserver only (as a preload module), never
by the worker's main process: it makes the forkserver, and every pool
process forked from it, ignore SIGINT and SIGTERM.

A stop signal often reaches every process of the worker at once: Ctrl-C
sends SIGINT to the terminal's whole foreground group, `kill -TERM -PGID`
the group, and systemd (KillMode=control-group) SIGTERM to the whole
cgroup. The pool processes must not die of it in the middle of a job: the
worker's main process drains (no more jobs, the running ones finish, the
rest go back to the broker) and then stops its pool itself, with SIGKILL
(runner.py). The forkserver exits on its own when the main process does.

Ignoring here, at import in the forkserver, leaves no window: a forked
child inherits the ignored dispositions (the forkserver restores to each
child the SIGINT handler it found, which is this one).
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
