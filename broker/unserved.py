"""Jobs for a task that no connected worker serves: how long they wait.

One rule, whatever the timing (README "Guarantees"; docs/PROTOCOL.md §5).
A job whose task no connected worker serves is queued like any other, and
its submitter is told at once what it waits for. It fails with
`UnknownTask` at the task's deadline:

    since    = when the task last became unserved (its first job was queued
               with nobody serving it, or its last server left)
    deadline = since + timeout_s                                    (the cap)
               or earlier, while some worker is connected:
               max(since, last worker joined) + grace_s

So on a settled cluster a typo fails `grace_s` after the submit (10 s by
default), naming the tasks the workers do serve and the closest one; a
worker that is still starting has `grace_s` from the submit, and from
every other worker's arrival, to join; and with no worker at all jobs
wait `timeout_s` (10 minutes by default) for one. A worker that serves the
task joining in time resets everything.

Pure bookkeeping driven by `now`: no I/O, no clock of its own.
"""

from __future__ import annotations

import difflib
import itertools
from typing import Iterable

from sockpool.protocol.defaults import UNSERVED_GRACE_S, UNSERVED_TIMEOUT_S

# Served task names quoted in a message, at most.
NAMES_SHOWN = 10


class UnservedTasks:
    def __init__(self, grace_s: float = UNSERVED_GRACE_S, timeout_s: float = UNSERVED_TIMEOUT_S) -> None:
        self.grace_s = grace_s
        self.timeout_s = timeout_s
        # task -> when it became unserved, oldest first (insertion order: `now`
        # only grows), so the tasks due first are always at the front.
        self.since: dict[str, float] = {}
        self.last_join = float("-inf")

    def mark(self, task: str, now: float) -> bool:
        """A job of `task` waits and nobody serves it; True if that is news."""
        if task in self.since:
            return False
        self.since[task] = now
        return True

    def joined(self, tasks: Iterable[str], now: float) -> None:
        self.last_join = now
        for task in tasks:
            self.since.pop(task, None)

    def deadline(self, task: str, workers_connected: bool) -> float:
        since = self.since[task]
        cap = since + self.timeout_s
        if not workers_connected:
            return cap
        return min(cap, max(since, self.last_join) + self.grace_s)

    def due(self, now: float, workers_connected: bool) -> list[tuple[str, float]]:
        """Tasks whose jobs fail now, with when they became unserved; they
        are forgotten here."""
        due = []
        # A deadline never comes before an older task's: stop at the first
        # that is not due, so a tick costs nothing however many names wait.
        for task, since in self.since.items():
            if self.deadline(task, workers_connected) > now:
                break
            due.append((task, since))
        for task, _ in due:
            del self.since[task]
        return due

    def oldest(self, count: int) -> list[tuple[str, float]]:
        """The `count` tasks that have waited longest."""
        return list(itertools.islice(self.since.items(), count))

    def forget(self, task: str) -> None:
        self.since.pop(task, None)


def describe(task: str, served: Iterable[str]) -> str:
    """Which tasks the connected workers serve, and the closest to `task`."""
    names = sorted(served)
    if not names:
        return "no worker is connected"
    shown = ", ".join(names[:NAMES_SHOWN]) + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")
    text = f"the connected workers serve {shown}"
    closest = difflib.get_close_matches(task, names, n=1)
    if closest:
        text += f"; did you mean {closest[0]!r}?"
    return text


def waiting_notice(task: str, served: Iterable[str], wait_s: float) -> str:
    return (f"no connected worker serves task {task!r} ({describe(task, served)}); "
            f"its jobs wait at most {wait_s:.0f} s for a worker that does")


def unknown_task_message(task: str, served: Iterable[str], waited_s: float) -> str:
    return f"no connected worker serves task {task!r}, none joined within {waited_s:.0f} s ({describe(task, served)})"
