"""What a client asks the broker besides running jobs: the session's
failed jobs, cancelling by session, broker id or task, retrying failed
jobs, the broker's status, and its queues and schedules.

Each method is one request on the client's link (`BrokerLink.request`),
waiting for the broker's reply; none touches the client's futures (the
cancel that does, `Client.cancel`, stays in api.py). `Client` inherits
them; an `operator` client's requests reach every session's jobs.
"""

from __future__ import annotations

from typing import Any

from sockpool.net.request import failed_job_rows
from sockpool.protocol import Control, ControlReply, FailedJobs, ListFailed, StatusReply, StatusRequest
from sockpool.protocol.control import Cancel, CancelReply, Retry, RetryReply, count_outcomes
from sockpool.protocol.messages import DEFAULT_QUEUE

from .link import BrokerLink


class BrokerRequests:
    """The request methods of `Client` (see the module docstring)."""

    _link: BrokerLink

    def failed_jobs(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Jobs of this session that failed for good (of every session, for
        an `operator` client), as the broker keeps them until their TTL.

        The broker keeps a bounded record of each (see SECURITY.md): large
        arguments are replaced by a note. It answers in pages that fit a
        frame; this asks for every page.

        Raises:
            ConnectionLost: no answer from the broker.
        """
        jobs: list[dict[str, Any]] = []
        while True:
            reply = self._link.request(ListFailed(offset=len(jobs)), timeout)
            assert isinstance(reply, FailedJobs)
            jobs += failed_job_rows(reply.jobs)
            if not reply.more or not reply.jobs:
                return jobs

    def cancel_session(self, session: str, *, stop: bool = True, timeout: float = 10.0) -> dict[str, int]:
        """Cancel every unfinished job of another session (a detached
        submission's ID, as `submit --detach` prints it); the counts of
        each outcome (`cancelled`, `stopped`, `running`, `finished`).

        Raises:
            ConnectionLost: no answer from the broker.
        """
        reply = self._link.request(Cancel(session=session, stop=stop), timeout)
        assert isinstance(reply, CancelReply)
        return count_outcomes(reply.outcomes)

    def cancel_jobs(
        self, gids: list[int] | None = None, *, task: str = "", stop: bool = True, timeout: float = 10.0
    ) -> list[list[Any]]:
        """Cancel jobs by broker id, or every unfinished job of `task`;
        `[broker id, outcome]` per job. Any job for an `operator` client,
        else only this session's.

        Raises:
            ConnectionLost: no answer from the broker.
        """
        reply = self._link.request(Cancel(gids=gids or [], task=task, stop=stop), timeout)
        assert isinstance(reply, CancelReply)
        return reply.outcomes

    def retry_failed(
        self, gids: list[int] | None = None, *, all: bool = False, task: str = "", timeout: float = 10.0
    ) -> tuple[list[int], list[int]]:
        """Run failed jobs again (see `failed_jobs` for their `id`s), as new
        attempts for the sessions that sent them. Any session's for an
        `operator` client, else only this session's. Returns (ids queued
        again, ids that are not among the failed jobs or cannot be retried).

        Raises:
            ConnectionLost: no answer from the broker.
        """
        reply = self._link.request(Retry(gids=gids or [], all=all, task=task), timeout)
        assert isinstance(reply, RetryReply)
        return reply.retried, reply.missing

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        """The broker's view of the cluster: workers, queue depth, totals,
        throughput, counts per task and recent failures (the dict
        `broker status --json` prints; see `BrokerState.status`).

        Raises:
            ConnectionLost: no answer from the broker.
        """
        reply = self._link.request(StatusRequest(), timeout)
        assert isinstance(reply, StatusReply)
        return reply.status

    # -- queues and schedules (the broker keeps them on disk) ---------------

    def pause_queue(self, queue: str, timeout: float = 10.0) -> None:
        """Stop dispatching `queue`'s jobs (it still accepts them), until
        `resume_queue`; the pause survives a broker restart.

        Raises:
            ValueError: a bad queue name.
            ConnectionLost: no answer from the broker.
        """
        self._control("pause_queue", {"queue": queue}, timeout)

    def resume_queue(self, queue: str, timeout: float = 10.0) -> None:
        """Dispatch `queue`'s jobs again. Raises as `pause_queue`."""
        self._control("resume_queue", {"queue": queue}, timeout)

    def add_schedule(
        self, name: str, cron: str, task: str, *args: Any, timezone: str = "UTC", queue: str | None = None,
        priority: int = 0, missed: str = "once", replace: bool = False, timeout: float = 10.0, **kwargs: Any,
    ) -> dict[str, Any]:
        """Run `task(*args, **kwargs)` at every fire time of the cron
        expression `cron` (5 fields, or 6 with seconds first) in `timezone`.

        The broker keeps the schedule and enqueues each firing exactly once.
        `missed` says what to do with firings missed while the broker was
        down: "once" (run the latest of them once) or "skip". Returns the
        schedule as `schedules()` lists it.

        Raises:
            ValueError: a bad expression, zone, name or option, or a schedule
                of that name exists (unless `replace`).
            ConnectionLost: no answer from the broker.
        """
        spec: dict[str, Any] = {
            "name": name, "cron": cron, "timezone": timezone, "task": task, "args": list(args), "kwargs": kwargs,
            "queue": queue or DEFAULT_QUEUE, "priority": priority, "missed": missed, "replace": replace,
        }
        return self._control("schedule_add", spec, timeout)  # type: ignore[no-any-return]

    def schedules(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every schedule, with `next_fire` (Unix time) and `last_outcome`."""
        return self._control("schedule_list", {}, timeout)  # type: ignore[no-any-return]

    def remove_schedule(self, name: str, timeout: float = 10.0) -> None:
        """Raises ValueError if there is no such schedule."""
        self._control("schedule_remove", {"name": name}, timeout)

    def pause_schedule(self, name: str, timeout: float = 10.0) -> None:
        """No firings until `resume_schedule`; those in between are not owed."""
        self._control("schedule_pause", {"name": name}, timeout)

    def resume_schedule(self, name: str, timeout: float = 10.0) -> None:
        self._control("schedule_resume", {"name": name}, timeout)

    def _control(self, op: str, args: dict[str, Any], timeout: float) -> Any:
        reply = self._link.request(Control(op, args), timeout)
        assert isinstance(reply, ControlReply)
        if not reply.ok:
            raise ValueError(reply.error)
        return reply.value
