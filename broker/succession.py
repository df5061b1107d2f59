"""Passing a concurrency limit's slot on at a worker, so that a limited
job starts the moment the one before it ends, not a round trip later.

Without this, a job under a full limit starts only after the result of
the job holding the slot has reached the broker (which frees the slot)
and the broker's `jobs` has reached the worker: a pool process idles for
a round trip per job (bench item 12).

Rules:
1. A job that holds exactly one slot of a limit of jobs at once (not a
   rate limit), leased to a worker whose hello said `successors`, may
   have one successor: the job first in that limit's line, if it waits
   for that limit alone, its queue is not paused and the worker serves
   its task, listens on its queue and has credit for it.
2. The successor is leased to the holder's worker at once, with
   `jobs.after` naming the holder. It holds no slot yet: the worker
   starts it only once the holder has ended there (its result, failure,
   crash, timeout or stop), so the two never run at the same time.
3. When the holder's run ends at the broker (a result, or a failure
   waiting for a retry), its slot passes to the successor instead of
   going back to the limit: the successor now holds it, and may have a
   successor of its own (rule 1). Nothing else is admitted meanwhile, so
   held slots never outnumber the capacity.
4. A successor that goes back before its holder ended (its worker was
   lost, it was handed back unrun, or stopped) holds nothing: it returns
   to the front of its limit's line, and the holder may name another.
   A holder that goes back unrun takes its successor with it (the worker
   hands both back); a holder lost with its worker keeps its slot, as
   any job back from a lost worker does (broker/limits.py).
5. A kill -9 of the broker forgets all of this: the restarted broker
   admits jobs again from its store, and a worker whose connection
   dropped stops what ran for it and starts none of its successors.

Pure: no clock, no I/O. The state calls `hand_out` when it dispatches,
`pass_on` where a slot would be released, and `forget` where a job's
lease ends otherwise.
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

from sockpool.protocol import Jobs
from .handout import started_messages
from .records import Job

if TYPE_CHECKING:
    from .state import BrokerState, Outbox


class Succession:
    def __init__(self) -> None:
        # Limit name -> gid -> a job holding one of its slots, leased to a
        # worker that takes successors, with no successor yet. Checked
        # again when used: a job that left its worker meanwhile is dropped.
        self.holders: dict[str, dict[int, Job]] = {}
        self.next: dict[int, tuple[Job, int]] = {}  # holder gid -> (successor, worker conn)
        self.after: dict[int, Job] = {}  # successor gid -> its holder
        self.passed = 0  # slots passed on, for status (totals.passed_on)

    def note(self, job: Job) -> None:
        """`job`, holding slots, was just leased to a worker that takes successors."""
        if job.limits is not None and len(job.limits) == 1:
            self.holders.setdefault(job.limits[0], {})[job.gid] = job

    def pass_on(self, job: Job) -> bool:
        """`job`'s run ended: True if its slot went to its successor (rule 3),
        False if there is none (the caller releases the slot)."""
        names = job.limits
        if names is not None and len(names) == 1:
            holders = self.holders.get(names[0])
            if holders is not None and holders.pop(job.gid, None) is not None and not holders:
                del self.holders[names[0]]
        found = self.next.pop(job.gid, None)
        if found is None:
            return False
        successor, conn = found
        del self.after[successor.gid]
        if successor.worker != conn or job.limits is None:
            return False
        successor.limits, job.limits = job.limits, None
        self.passed += 1
        self.holders.setdefault(successor.limits[0], {})[successor.gid] = successor
        return True

    def forget(self, job: Job) -> None:
        """`job` left its lease other than by ending its run (rule 4)."""
        holder = self.after.pop(job.gid, None)
        if holder is not None and self.next.get(holder.gid, (None, 0))[0] is job:
            del self.next[holder.gid]
            self.note(holder)  # it may name another (checked again when it does)

    def hand_out(self, state: BrokerState) -> Outbox:
        """Successors for the holders whose limits have jobs waiting (rule 1)."""
        limits = state.limits
        by_worker: dict[int, tuple[list[list[Any]], list[list[int]]]] = {}
        started: list[Job] = []
        for name, holders in list(self.holders.items()):
            for gid, holder in list(holders.items()):
                if limits.first_waiting(name) is None:
                    break
                worker = state.workers.get(holder.worker) if holder.worker is not None else None
                if worker is None or worker.leased.get(gid) is not holder or holder.limits != (name,):
                    del holders[gid]  # gone from its worker, or its slot passed on
                    continue
                if worker.credit <= 0 or worker.draining or not limits.passable(holder.limits):
                    continue
                successor = limits.first_waiting(name)
                if (successor is None or successor.task not in worker.tasks or successor.queue not in worker.queues
                        or successor.queue in state.dispatcher.paused):
                    continue
                limits.take_first(name)
                del holders[gid]
                self.next[gid] = (successor, worker.conn_id)
                self.after[successor.gid] = holder
                successor.worker = worker.conn_id
                successor.dispatched_at = state.now
                worker.leased[successor.gid] = successor
                worker.credit -= 1
                entries, pairs = by_worker.setdefault(worker.conn_id, ([], []))
                entries.append(successor.entry())
                pairs.append([successor.gid, gid])
                if successor.notify:
                    started.append(successor)
            if not holders:
                del self.holders[name]
        out: Outbox = [(conn, Jobs(entries, after=pairs)) for conn, (entries, pairs) in by_worker.items()]
        return out + started_messages(state, started) if started else out
