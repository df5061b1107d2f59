"""`broker status` as text: the status dict (BrokerState.status) in tables."""

from __future__ import annotations

from typing import Any


def format_status(status: dict[str, Any]) -> str:
    workers = status["workers"]
    queue = status["queue"]
    totals = status["totals"]
    throughput = status["throughput"]
    lines = [
        f"broker {status['broker']}  up {format_age(status['uptime_s'])}  "
        f"{len(workers)} workers ({status['processes']} processes)  {status['clients']} clients",
        "",
        *([f"REFUSING NEW JOBS: {status['store_refusal']}", ""] if status.get("store_refusal") else []),
        f"queue       ready {queue['ready']}  in flight {queue['in_flight']}  "
        f"delayed or retrying {queue['delayed']}  waiting on a limit {queue.get('waiting_on_limit', 0)}  "
        f"failed {queue['failed']}",
        f"totals      submitted {totals['submitted']}  completed {totals['completed']}  failed {totals['failed']}  "
        f"refused {totals['refused']}  requeued {totals['requeued']}  retried {totals['retried']}  "
        f"cancelled {totals.get('cancelled', 0)}  deduplicated {totals.get('deduplicated', 0)}",
        f"throughput  {throughput['per_s']:.1f} calls/s over the last {throughput['window_s']} s",
        "",
    ]
    unserved = status.get("unserved") or []
    if unserved:
        lines += table(
            ["NO WORKER SERVES", "JOBS", "WAITING", "FAILS IN"],
            [[u["task"], u["jobs"], format_age(u["waiting_s"]), format_age(u["fails_in_s"])] for u in unserved],
        )
        lines.append("")
    if workers:
        lines += table(
            ["WORKER", "ADDRESS", "PROCESSES", "IN FLIGHT", "DONE", "FAILED", "LAST HEARD"],
            [
                [w["name"] or "-", w["address"], w["processes"], w["in_flight"], w["done"], w["failed"],
                 format_age(w["last_seen_s"]) + " ago"]
                for w in workers
            ],
        )
    else:
        lines.append("no workers connected")
    queues = status.get("queues", {})
    if queues:
        lines.append("")
        lines += table(
            ["QUEUE", "READY", "RUNNING", "DELAYED", "OLDEST WAIT", "CALLS/S", "STATE"],
            [[name, q["ready"], q["running"], q["delayed"], format_age(q["oldest_wait_s"]), round(q["per_s"], 1),
              "paused" if q["paused"] else "active"] for name, q in queues.items()],
        )
    if status.get("schedules"):
        lines.append("")
        lines += schedule_table(status["schedules"])
    if status["tasks"]:
        lines.append("")
        lines += table(
            ["TASK", "SUBMITTED", "COMPLETED", "FAILED"],
            [[task, c["submitted"], c["completed"], c["failed"]] for task, c in status["tasks"].items()],
        )
    limits = status.get("limits") or {}
    if limits:
        lines.append("")
        lines += table(
            ["LIMIT", "CAPACITY", "HELD", "WAITING"],
            [[name, f"{l['limit']}/{l['per_s']:g}s" if l["per_s"] else l["limit"], l["held"], l["waiting"]]
             for name, l in limits.items()],
        )
    failures = status["recent_failures"]
    if failures:
        lines += ["", "recent failures:"]
        lines += [
            f"  {format_age(f['age_s'])} ago  {f['task']}: {f['type']}: {f.get('message', '')}".rstrip()
            for f in failures[:5]
        ]
    return "\n".join(lines)


def schedule_table(schedules: list[dict[str, Any]]) -> list[str]:
    """`broker schedule list`: each schedule, its next firing and last outcome."""
    return table(
        ["SCHEDULE", "CRON", "TIMEZONE", "QUEUE", "TASK", "NEXT (UTC)", "LAST OUTCOME"],
        [[s["name"], s["cron"], s["timezone"], s["queue"], s["task"],
          "paused" if s["paused"] else s["next_fire_utc"], format_outcome(s["last_outcome"])]
         for s in schedules],
    )


def format_outcome(outcome: dict[str, Any] | None) -> str:
    if not outcome:
        return "-"
    from .schedules import fire_time_text

    return f"{outcome['outcome']} (fired {fire_time_text(outcome['fire'])})"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Columns padded to fit; numbers right-aligned, text left-aligned."""
    cells = [header] + [[str(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) for i in range(len(header))]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return [
        "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip()
        for r in cells
    ]


def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
