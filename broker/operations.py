"""`control` requests: pause and resume queues, add and manage schedules. No I/O.

Only an operator connection may make them (see SECURITY.md). Each
operation checks its arguments, changes the state, journals what
must survive a restart and answers with a `control_reply`, which the
server sends only once the journal is on disk (like `accepted`). A bad
argument is the caller's fault and gets `ok=False` with the reason; it
never closes the connection or touches anything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from sockpool.protocol import ControlReply, pack_body
from sockpool.protocol.limits import MAX_TASK_NAME_CHARS
from sockpool.protocol.messages import (
    DEFAULT_QUEUE,
    MAX_PRIORITY,
    MAX_QUEUE_NAME_CHARS,
    MIN_PRIORITY,
    valid_queue_name,
)

from .schedules import (
    MAX_SCHEDULE_NAME_CHARS,
    MAX_SCHEDULES,
    MISSED_POLICIES,
    Schedule,
    check_cron,
    fire_time_text,
)

if TYPE_CHECKING:
    from .state import BrokerState

# A schedule's arguments, packed: a schedule is a definition, not a payload.
MAX_SCHEDULE_ARGS_BYTES = 16 * 1024


class BadRequest(ValueError):
    """The caller's arguments cannot be used; the reply says why."""


def handle(state: BrokerState, op: str, args: dict[str, Any], now: float, operator: bool) -> ControlReply:
    """Every operation acts beyond the caller's own session (a paused queue
    or a schedule is everyone's), so each needs the operator role."""
    handler = _OPS.get(op)
    if handler is None:
        return ControlReply(False, error=f"unknown control operation {op!r}")
    if not operator:
        return ControlReply(False, error=f"{op} needs the operator role (connect with --operator / operator=True)")
    try:
        return ControlReply(True, handler(state, args, now))
    except BadRequest as exc:
        return ControlReply(False, error=str(exc))


def _queue_arg(args: dict[str, Any]) -> str:
    queue = args.get("queue")
    if not valid_queue_name(queue):
        raise BadRequest(f"queue names are 1 to {MAX_QUEUE_NAME_CHARS} letters, digits and _.:-")
    return str(queue)


def _pause_queue(state: BrokerState, args: dict[str, Any], now: float) -> Any:
    queue = _queue_arg(args)
    state.dispatcher.pause(queue)
    state.journal.append(("queue_paused", queue, True))
    return {"queue": queue, "paused": True}


def _resume_queue(state: BrokerState, args: dict[str, Any], now: float) -> Any:
    queue = _queue_arg(args)
    state.dispatcher.resume(queue)
    state.journal.append(("queue_paused", queue, False))
    state.wants_dispatch = True
    return {"queue": queue, "paused": False}


def _name_arg(args: dict[str, Any]) -> str:
    name = args.get("name")
    if type(name) is not str or not 0 < len(name) <= MAX_SCHEDULE_NAME_CHARS or not name.isprintable():
        raise BadRequest(f"schedule names are 1 to {MAX_SCHEDULE_NAME_CHARS} printable characters")
    return name


def _schedule_add(state: BrokerState, args: dict[str, Any], now: float) -> Any:
    name = _name_arg(args)
    cron, tz, task = args.get("cron"), args.get("timezone", "UTC"), args.get("task")
    call_args, kwargs = args.get("args", []), args.get("kwargs", {})
    queue, priority, missed = args.get("queue", DEFAULT_QUEUE), args.get("priority", 0), args.get("missed", "once")
    if type(cron) is not str or type(tz) is not str:
        raise BadRequest("cron and timezone must be strings")
    try:
        check_cron(cron, tz)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if type(task) is not str or not 0 < len(task) <= MAX_TASK_NAME_CHARS:
        raise BadRequest("task must be a task name")
    if type(call_args) is not list or type(kwargs) is not dict:
        raise BadRequest("args must be a list and kwargs a map")
    if len(pack_body([call_args, kwargs])) > MAX_SCHEDULE_ARGS_BYTES:
        raise BadRequest(f"a schedule's args and kwargs take at most {MAX_SCHEDULE_ARGS_BYTES} bytes")
    if not valid_queue_name(queue):
        raise BadRequest(f"queue names are 1 to {MAX_QUEUE_NAME_CHARS} letters, digits and _.:-")
    if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise BadRequest(f"priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}")
    if missed not in MISSED_POLICIES:
        raise BadRequest(f"missed must be one of {', '.join(MISSED_POLICIES)}")
    if name in state.schedules.by_name and not args.get("replace"):
        raise BadRequest(f"a schedule named {name!r} exists (remove it first, or replace it)")
    if name not in state.schedules.by_name and len(state.schedules) >= MAX_SCHEDULES:
        raise BadRequest(f"at most {MAX_SCHEDULES} schedules")
    options: dict[str, Any] = {}
    if queue != DEFAULT_QUEUE:
        options["queue"] = queue
    if priority:
        options["priority"] = priority
    schedule = Schedule(name, cron, tz, task, call_args, kwargs, options, missed=missed)
    state.schedules.add(schedule, now)
    state.journal.append(("schedule", schedule.record()))
    return schedule_row(schedule)


def _schedule_list(state: BrokerState, args: dict[str, Any], now: float) -> Any:
    """Every schedule; without their arguments if with them the reply would
    not fit a frame (each schedule's arguments are bounded, their sum is not)."""
    ordered = sorted(state.schedules.by_name.values(), key=lambda s: s.name)
    rows = [schedule_row(s) for s in ordered]
    if len(pack_body(rows)) > state.max_frame_bytes // 2:
        rows = [schedule_row(s, full=False) for s in ordered]
    return rows


def _schedule_remove(state: BrokerState, args: dict[str, Any], now: float) -> Any:
    name = _name_arg(args)
    if state.schedules.remove(name) is None:
        raise BadRequest(f"no schedule named {name!r}")
    state.journal.append(("unschedule", name))
    return {"name": name, "removed": True}


def _set_paused(paused: bool) -> Callable[[BrokerState, dict[str, Any], float], Any]:
    def change(state: BrokerState, args: dict[str, Any], now: float) -> Any:
        name = _name_arg(args)
        schedule = state.schedules.set_paused(name, paused, now)
        if schedule is None:
            raise BadRequest(f"no schedule named {name!r}")
        state.journal.append(("schedule", schedule.record()))
        return schedule_row(schedule)

    return change


def schedule_row(schedule: Schedule, full: bool = True) -> dict[str, Any]:
    """A schedule as `schedule list` shows it: its record, its next fire time.
    Not `full` (for status without the operator role, and the unauthenticated
    dashboard): no arguments, and a failure's type without its message."""
    row = schedule.record()
    if not full:
        row["args"], row["kwargs"] = [], {}
        outcome = row["last_outcome"]
        if outcome and outcome["outcome"].startswith("failed: "):
            row["last_outcome"] = {**outcome, "outcome": outcome["outcome"].split(":", 2)[0] + ":" + outcome["outcome"].split(":", 2)[1]}
    row["queue"] = schedule.options.get("queue", DEFAULT_QUEUE)
    row["priority"] = schedule.options.get("priority", 0)
    row["next_fire"] = schedule.next_fire
    row["next_fire_utc"] = fire_time_text(schedule.next_fire)
    del row["since"], row["options"]
    return row


_OPS: dict[str, Callable[[BrokerState, dict[str, Any], float], Any]] = {
    "pause_queue": _pause_queue,
    "resume_queue": _resume_queue,
    "schedule_add": _schedule_add,
    "schedule_list": _schedule_list,
    "schedule_remove": _schedule_remove,
    "schedule_pause": _set_paused(True),
    "schedule_resume": _set_paused(False),
}
