"""Finishes the store writer holds back, waiting for their acks.

A plain job's success is read by its submitter alone, and its submitter
acknowledges it moments after it arrives; the acknowledgement deletes the
job's row. Written as it comes, such a job costs its row three writes: the
insert (which must come before `accepted`: accepted means on disk), the
update with its result, and the delete. Held back until its ack, the
finish and the ack cancel out and the row costs an insert and a delete.

Which finishes may wait is the broker's state's call (the sixth field of a
`finish` entry, outcomes.py): successes nobody else reads. A detached
result, a job with a unique key (its followers and later joiners read its
row), and failures (listed by `broker failed`) are written at once.

The bound: a finish is held until its ack comes or for at most HOLD_S
(`broker start --finish-hold-s`), and only while fewer than MAX_HELD are
held; then the writer writes it, waking for it if nothing else comes (a
store that cannot write writes it with its next commit that succeeds).
Closing writes every held finish. What a kill -9 leaves is a held finish
unwritten: the job is unfinished on disk and runs again after the
restart, and its result goes to its session again; a client that already
has it ignores the second copy (client/api.py `_resolve`), so the caller
sees each result once. A broker that stops leading (PostgreSQL,
`abandon`) drops what it holds the same way: the next leader runs those
jobs again. That window already existed between a result and the next
commit; holding widens it from one commit to at most HOLD_S, and only for
results not yet acknowledged.

Pure: driven by `now`, no thread, no I/O. The writer plans a flush with
`plan` and adopts the plan only once the flush committed, so a failed
commit leaves the holds as they were.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# How long a finish waits for its ack before it is written anyway.
HOLD_S = 0.5
# At most this many finishes held; more are written as they come. A held
# finish keeps no bytes of its own: its value is the one the session keeps
# for its client until the same ack.
MAX_HELD = 50_000

Entry = tuple[Any, ...]


class Plan(NamedTuple):
    """What a flush changes in the holds, once it committed."""

    held: list[Entry]       # finishes it holds back, from now on
    released: list[int]     # gids no longer held: acknowledged, or written by this flush
    now: float


class FinishHolds:
    def __init__(self, hold_s: float = HOLD_S, most: int = MAX_HELD) -> None:
        self.hold_s = hold_s
        self.most = most
        # gid -> (held since, finish entry), oldest first.
        self._held: dict[int, tuple[float, Entry]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def next_due(self) -> float | None:
        """When the oldest held finish must be written, if any is held."""
        for since, _ in self._held.values():
            return since + self.hold_s
        return None

    def plan(self, journal: list[Entry], now: float, everything: bool = False) -> tuple[list[Entry], Plan]:
        """The journal a flush writes (held finishes that are due first,
        then `journal` less the finishes it holds back) and what the holds
        become once it committed. `everything`: hold nothing and write every
        held finish (closing).

        A finish is held only if its job's add is not in the same journal:
        one that finished within the flush that adds it is one finished
        insert already (rows.rows_for). A held finish whose ack comes in a
        later flush is dropped there: that flush's delete is all the row needs.
        """
        room = 0 if everything or self.hold_s <= 0 else self.most - len(self._held)
        added: set[int] = set()
        forgotten: set[int] = set()
        fresh: list[Entry] = []
        out: list[Entry] = []
        for op in journal:
            kind = op[0]
            if kind == "finish":
                if room > 0 and len(op) > 5 and op[5] and op[1] not in added:
                    fresh.append(op)
                    room -= 1
                    continue
            elif kind == "add":
                added.add(op[1].gid)
            elif kind == "forget":
                forgotten.update(op[1])
            out.append(op)
        held = self._held
        released = [gid for gid in forgotten if gid in held] if held else []
        due: list[Entry] = []
        if held:
            gone = set(released)
            for gid, (since, op) in held.items():
                if not everything and since + self.hold_s > now:
                    break  # oldest first: the rest are younger
                if gid not in gone:
                    due.append(op)
                    released.append(gid)
        # Acknowledged in this very flush: the delete is all the row needs.
        kept = [op for op in fresh if op[1] not in forgotten] if forgotten else fresh
        return (due + out if due else out), Plan(kept, released, now)

    def adopt(self, plan: Plan) -> None:
        """The flush planned by `plan` committed."""
        held = self._held
        for gid in plan.released:
            held.pop(gid, None)
        now = plan.now
        for op in plan.held:
            held[op[1]] = (now, op)

    def clear(self) -> None:
        """Drop every held finish (the store was abandoned: not ours to write)."""
        self._held.clear()
