"""Messages for control over jobs already sent: cancel, stop, retry.

Kept apart from messages.py (the job path) because none of them is on the
hot path of a job; they register in the same tag registry, so `decode`
knows them once `sockpool.protocol` is imported.

    cancel        C->B  stop jobs: by client id in a session, by broker id, or by task
    cancel_reply  B->C  [[id, outcome], ...] in the order asked, once on disk
    stop          B->W  broker job ids to stop: kill the process running one,
                        skip one not yet started; their results are not wanted
    retry         C->B  run failed jobs again (by broker id, or all, or all of a task)
    retry_reply   B->C  broker ids of the failed jobs queued again, once on disk

Cancel outcomes: `cancelled` (it was waiting: it never runs), `stopped` (it
was running: its process is being killed), `running` (it was running and
`stop` was false: left alone), `finished` (it had an outcome already, or no
such job).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from .errors import ProtocolError
from .messages import Message, _checks, _message

OUTCOME_CANCELLED = "cancelled"
OUTCOME_STOPPED = "stopped"
OUTCOME_RUNNING = "running"
OUTCOME_FINISHED = "finished"
# The error type of a cancelled job's result.
E_CANCELLED = "Cancelled"


@_message("cancel")
class Cancel(Message):
    """Client (or operator) to broker: cancel jobs.

    `ids` are client job ids of `session` (the sender's own when empty);
    with `session` given and no `ids`, every unfinished job of that session
    (`submit --cancel ID`). `gids` are broker job ids and `task` every
    unfinished job of that task (both for `broker cancel`). Jobs that are
    running are stopped only with `stop`.
    """

    ids: list[int] = field(default_factory=list)
    session: str = ""
    gids: list[int] = field(default_factory=list)
    task: str = ""
    stop: bool = False


@_message("cancel_reply")
class CancelReply(Message):
    """Broker to client: `[id, outcome]` per job asked about (client ids for
    `ids`, broker ids otherwise), sent once the cancellations are on disk."""

    outcomes: list[list[Any]]


@_message("stop")
class Stop(Message):
    """Broker to worker: stop these jobs (broker ids). Results that still
    come for them are dropped by the broker."""

    ids: list[int]


@_message("retry")
class Retry(Message):
    """Client (operator) to broker: run failed jobs again, as new attempts
    for the session that submitted them. `gids`, or `all` (of `task`, if
    given)."""

    gids: list[int] = field(default_factory=list)
    all: bool = False
    task: str = ""


@_message("retry_reply")
class RetryReply(Message):
    """Broker to client: the broker ids queued again, and those asked for
    that are not (or no longer) among the failed jobs."""

    retried: list[int]
    missing: list[int] = field(default_factory=list)


def _check_int_lists(*names: str) -> Any:
    def check(msg: Any) -> None:
        for name in names:
            if not all(type(i) is int for i in getattr(msg, name)):
                raise ProtocolError(f"{msg.type}: {name} must be integers")

    return check


_checks[Cancel] = _check_int_lists("ids", "gids")
_checks[Stop] = _check_int_lists("ids")
_checks[Retry] = _check_int_lists("gids")


def count_outcomes(outcomes: list[list[Any]]) -> dict[str, int]:
    """How many jobs of a `cancel_reply` had each outcome."""
    counts = {"cancelled": 0, "stopped": 0, "running": 0, "finished": 0}
    for _, outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts
