"""The worker's bookkeeping: chunks, slots, the monitor's decisions, run_chunk.

No pool here: slots live in real shared memory, run_chunk runs in this
process, and the monitor is driven tick by tick with `now` passed in. The
processes it watches are real ones (`sleep`), so a kill is a real kill.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest

from sockpool.protocol.messages import E_PROCESS_DIED, E_TIMEOUT
from sockpool.protocol.packed import PACKED_ARRAY, pack_array, unpack_array
from sockpool.worker import runner as runner_module
from sockpool.worker.chunks import ChunkBook, LostChunk, job_timeouts
from sockpool.worker.monitor import Monitor, describe_exit, died_message, timeout_message
from sockpool.worker.slots import NO_JOB, Slots, slot_count

CONTEXT = multiprocessing.get_context("forkserver")


def job(job_id: int, task: str = "square", *args: Any, **options: Any) -> list[Any]:
    entry = [job_id, task, list(args) or [job_id], {}, False]
    return entry + [options] if options else entry


def ignore(*_: Any) -> None:
    pass


def dead_pid() -> int:
    """A pid no process has: above the kernel's limit."""
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 1


# -- chunks --------------------------------------------------------------------


def test_job_timeouts_lists_only_jobs_with_a_timeout():
    jobs = [job(1), job(2, timeout=1.5), job(3, retries=2), job(4, timeout=3, retries=1), [5, "t", [], {}, False, {}]]
    assert job_timeouts(jobs) == {2: 1.5, 4: 3.0}


def test_chunk_ids_are_unique_and_never_zero():
    book = ChunkBook(3)
    ids = [book.open("t", [job(i)], ignore).id for i in range(5)]
    assert 0 not in ids and len(set(ids)) == 5
    assert len(book) == 5


def test_a_chunk_leaves_the_book_once_results_first():
    book = ChunkBook(3)
    chunk = book.open("t", [job(1), job(2)], ignore)
    assert book.finish(chunk.id) is chunk
    assert book.lose(chunk.id, 1) is None  # a death noticed late changes nothing
    assert book.finish(chunk.id) is None
    assert len(book) == 0


def test_a_chunk_leaves_the_book_once_loss_first():
    book = ChunkBook(3)
    chunk = book.open("t", [job(1), job(2), job(3)], ignore)
    lost = book.lose(chunk.id, 2)
    assert lost is not None and lost.chunk is chunk
    assert lost.blamed == job(2)
    assert lost.rerun == [job(1), job(3)]
    assert lost.given_up == []
    assert book.finish(chunk.id) is None  # late results are dropped, never sent twice
    assert book.lose(chunk.id, 2) is None


def test_a_loss_between_jobs_blames_nobody_and_reruns_everything():
    book = ChunkBook(3)
    chunk = book.open("t", [job(1), job(2)], ignore)
    lost = book.lose(chunk.id, None)
    assert lost is not None and lost.blamed is None and lost.rerun == [job(1), job(2)]
    # A job id that is not in the chunk blames nobody either.
    chunk = book.open("t", [job(3)], ignore)
    lost = book.lose(chunk.id, 99)
    assert lost is not None and lost.blamed is None and lost.rerun == [job(3)]


def test_unblamed_losses_give_a_job_up_after_max_lost_runs():
    book = ChunkBook(2)
    jobs = [job(1), job(2)]
    for _ in range(2):
        lost = book.lose(book.open("t", jobs, ignore, rerun=True).id, None)
        assert lost is not None and lost.rerun == jobs
    lost = book.lose(book.open("t", jobs, ignore, rerun=True).id, None)
    assert lost is not None and lost.rerun == [] and lost.given_up == jobs


def test_a_rerun_chunk_that_finishes_clears_the_loss_count():
    book = ChunkBook(1)
    jobs = [job(1)]
    lost = book.lose(book.open("t", jobs, ignore).id, None)
    assert lost is not None and lost.rerun == jobs
    assert book.finish(book.open("t", jobs, ignore, rerun=True).id) is not None
    lost = book.lose(book.open("t", jobs, ignore).id, None)
    assert lost is not None and lost.rerun == jobs  # counted from zero again


def test_blamed_losses_do_not_count_against_the_chunk_mates():
    book = ChunkBook(1)
    for blamed in (1, 2, 3):
        jobs = [job(i) for i in range(blamed, 5)]
        lost = book.lose(book.open("t", jobs, ignore).id, blamed)
        assert lost is not None and lost.given_up == [] and lost.rerun == jobs[1:]


# -- words ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "exitcode, words",
    [(3, "exit code 3"), (0, "exit code 0"), (-9, "killed by signal 9 (SIGKILL)"),
     (-11, "killed by signal 11 (SIGSEGV)"), (None, "exit status unknown"), (-200, "killed by signal 200")],
)
def test_describe_exit(exitcode, words):
    assert words in describe_exit(exitcode)


def test_messages_say_what_happened():
    assert "died" in died_message(-11) and "SIGSEGV" in died_message(-11)
    assert timeout_message(2.5).startswith("timeout") and "2.5 s" in timeout_message(2.5)


# -- slots ---------------------------------------------------------------------


def test_slot_count_leaves_room_for_replacements():
    assert all(slot_count(n) > n for n in (1, 2, 64))


def test_claim_takes_empty_slots_then_dead_idle_ones_never_dead_busy_ones():
    slots = Slots(CONTEXT, 3)
    me = os.getpid()
    assert [slots.claim(me, timeout_s=0) for _ in range(3)] == [0, 1, 2]
    assert slots.claim(me, timeout_s=0) == -1  # all held by a live process
    gone = dead_pid()
    ints = slots.ints
    ints[0], ints[1], ints[2] = gone, 7, 42  # died running job 42 of chunk 7: evidence
    ints[3], ints[4], ints[5] = gone, 0, NO_JOB  # died idle: free to take
    assert slots.claim(me, timeout_s=0) == 1
    assert slots.read(0).pid == gone and slots.read(0).running
    slots.free(0, gone)
    assert slots.read(0).pid == 0
    assert slots.claim(me, timeout_s=0) == 0


def test_free_leaves_a_slot_that_a_new_process_claimed():
    slots = Slots(CONTEXT, 1)
    assert slots.claim(os.getpid(), timeout_s=0) == 0
    slots.free(0, dead_pid())
    assert slots.read(0).pid == os.getpid()


def test_writer_views_write_the_shared_table():
    slots = Slots(CONTEXT, 2)
    ints, flags, base = slots.writer(1)
    ints[base + 1], ints[base + 2] = 5, 9
    assert (slots.read(1).chunk, slots.read(1).job) == (5, 9)
    slots.set_draining()
    assert flags[0] == 1 and slots.draining
    # Untracked (no slot): private fields, but the shared draining flag.
    ints, flags, base = slots.writer(-1)
    ints[base + 2] = 3
    assert all(slots.read(i).job != 3 for i in range(2))
    assert flags[0] == 1


# -- run_chunk, in this process --------------------------------------------------


@pytest.fixture
def in_slot(monkeypatch):
    """This process as a pool process in slot 0, serving the built-ins and `peek`."""
    slots = Slots(CONTEXT, 1)
    index = slots.claim(os.getpid(), timeout_s=0)
    monkeypatch.setattr(runner_module, "_slot", slots.writer(index))
    monkeypatch.setattr(runner_module, "_tasks", dict(runner_module.load_tasks([])))
    runner_module._tasks["peek"] = lambda _: [slots.read(index).chunk, slots.read(index).job]
    return slots


def test_run_chunk_marks_each_job_in_the_slot_while_it_runs(in_slot):
    packed, elapsed_s, count, released = runner_module.run_chunk(
        8, [job(1, "peek"), job(2, "square", 3), job(3, "peek"), [4, "nope", [], {}, False]])
    results = msgpack.unpackb(packed)
    assert count == 4 and released == [] and elapsed_s >= 0
    assert results[0] == [1, True, [8, 1]] and results[2] == [3, True, [8, 3]]
    assert results[1] == [2, True, 9]
    assert results[3][:2] == [4, False] and results[3][2]["type"] == "UnknownTask"
    assert (in_slot.read(0).chunk, in_slot.read(0).job) == (0, NO_JOB)  # idle again


def test_run_chunk_accepts_jobs_with_options(in_slot):
    packed, _, count, _ = runner_module.run_chunk(1, [job(1, "square", 4, timeout=2, retries=1)])
    assert msgpack.unpackb(packed) == [[1, True, 16]] and count == 1


def test_run_chunk_hands_back_every_job_once_draining(in_slot):
    in_slot.set_draining()
    packed, _, count, released = runner_module.run_chunk(2, [job(1), job(2), job(3)])
    assert msgpack.unpackb(packed) == [] and count == 0 and released == [1, 2, 3]


def test_run_chunk_unpacks_a_map_chunk_and_packs_its_values(in_slot):
    """A map chunk arrives packed and leaves packed: the pool process is
    the only hop of the worker that sees its items."""
    packed, _, count, _ = runner_module.run_chunk(1, [[1, "square", pack_array([1, 2, 3]), {}, True]])
    [[job_id, ok, value]] = msgpack.unpackb(packed)
    assert (job_id, ok, count) == (1, True, 1)
    assert isinstance(value, msgpack.ExtType) and unpack_array(value) == [1, 4, 9]


@pytest.mark.parametrize(
    "args",
    [msgpack.ExtType(PACKED_ARRAY, msgpack.packb([{1: "int key"}])), msgpack.ExtType(PACKED_ARRAY, b"\x93\x01")],
    ids=["int-keys", "truncated"],
)
def test_run_chunk_fails_only_the_job_whose_packed_args_it_cannot_read(in_slot, args):
    packed, _, count, _ = runner_module.run_chunk(1, [[1, "echo", args, {}, True], job(2, "square", 5)])
    first, second = msgpack.unpackb(packed)
    assert first[:2] == [1, False] and first[2]["type"] == "UnencodableArguments"
    assert "cannot be read" in first[2]["message"]
    assert second == [2, True, 25] and count == 2


def test_run_chunk_sends_values_the_client_would_refuse_as_one_job_failure(in_slot):
    packed, _, _, _ = runner_module.run_chunk(1, [[1, "echo", [{"k": {1: "int key"}}], {}, True]])
    [[job_id, ok, value]] = msgpack.unpackb(packed)
    assert (job_id, ok, value["type"]) == (1, False, "UnencodableResult")


# -- the monitor, tick by tick ---------------------------------------------------


@dataclass
class Reaped:
    """What the pool's list held for a process it has reaped: pid and exit code."""

    pid: int
    exitcode: int | None


class Watch:
    def __init__(self) -> None:
        self.slots = Slots(CONTEXT, 4)
        self.book = ChunkBook(3)
        self.live: list[Any] = []
        self.lost: list[tuple[LostChunk, str, str]] = []
        self.monitor = Monitor(
            self.slots, self.book, lambda: list(self.live), lambda *a: self.lost.append(a),
            died_type=E_PROCESS_DIED, timeout_type=E_TIMEOUT,
        )

    def put(self, index: int, pid: int, chunk: int, job_id: int) -> None:
        base = index * 3
        self.slots.ints[base], self.slots.ints[base + 1], self.slots.ints[base + 2] = pid, chunk, job_id


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    proc.kill()
    proc.wait(10)


def test_monitor_blames_the_running_job_of_a_process_the_pool_reaped(sleeper):
    watch = Watch()
    chunk = watch.book.open("t", [job(1), job(2), job(3)], ignore)
    proc = Reaped(sleeper.pid, None)
    watch.live = [proc]
    watch.put(0, sleeper.pid, chunk.id, 2)
    watch.monitor.tick(0.0)
    assert watch.lost == []  # alive as far as the pool knows
    proc.exitcode, watch.live = -11, []  # died and reaped
    watch.monitor.tick(0.1)
    ((lost, kind, message),) = watch.lost
    assert kind == E_PROCESS_DIED and "SIGSEGV" in message
    assert lost.blamed == job(2) and lost.rerun == [job(1), job(3)]
    assert watch.slots.read(0).pid == 0  # evidence used, slot free
    watch.monitor.tick(0.2)
    assert len(watch.lost) == 1


def test_monitor_uses_the_exit_code_of_an_adopted_process_it_never_saw_in_the_pool():
    watch = Watch()
    chunk = watch.book.open("t", [job(1)], ignore)
    gone = dead_pid()
    watch.monitor.adopt(Reaped(gone, 7))
    watch.put(0, gone, chunk.id, 1)
    watch.monitor.tick(0.0)
    ((lost, _, message),) = watch.lost
    assert "exit code 7" in message and lost.blamed == job(1)


def test_monitor_reruns_a_whole_chunk_when_a_process_dies_between_jobs():
    watch = Watch()
    chunk = watch.book.open("t", [job(1), job(2)], ignore)
    watch.put(1, dead_pid(), chunk.id, NO_JOB)
    watch.monitor.tick(0.0)
    ((lost, _, message),) = watch.lost
    assert lost.blamed is None and lost.rerun == [job(1), job(2)] and "exit status unknown" in message


def test_monitor_kills_a_job_past_its_timeout_and_not_before(sleeper):
    watch = Watch()
    chunk = watch.book.open("t", [job(1), job(2, timeout=2), job(3)], ignore)
    watch.live = [Reaped(sleeper.pid, None)]
    watch.put(0, sleeper.pid, chunk.id, 2)
    watch.monitor.tick(100.0)  # first seen running
    watch.monitor.tick(101.9)
    assert watch.lost == [] and sleeper.poll() is None
    watch.monitor.tick(102.1)
    ((lost, kind, message),) = watch.lost
    assert kind == E_TIMEOUT and "2 s" in message
    assert lost.blamed == job(2, timeout=2) and lost.rerun == [job(1), job(3)]
    assert sleeper.wait(10) == -signal.SIGKILL
    # Its death is ours: the slot is freed, and nothing is reported twice.
    watch.live = []
    watch.monitor.tick(102.2)
    assert len(watch.lost) == 1 and watch.slots.read(0).pid == 0


def test_monitor_times_each_job_from_when_it_started(sleeper):
    watch = Watch()
    chunk = watch.book.open("t", [job(1, timeout=1), job(2, timeout=1)], ignore)
    watch.live = [Reaped(sleeper.pid, None)]
    watch.put(0, sleeper.pid, chunk.id, 1)
    watch.monitor.tick(0.0)
    watch.monitor.tick(0.9)
    watch.put(0, sleeper.pid, chunk.id, 2)  # job 1 done in time, job 2 starts
    watch.monitor.tick(1.5)
    watch.monitor.tick(2.4)
    assert watch.lost == [] and sleeper.poll() is None


def test_monitor_leaves_a_process_whose_chunk_already_came_back(sleeper):
    watch = Watch()
    chunk = watch.book.open("t", [job(1, timeout=1)], ignore)
    watch.live = [Reaped(sleeper.pid, None)]
    watch.put(0, sleeper.pid, chunk.id, 1)
    watch.monitor.tick(0.0)
    watch.book.finish(chunk.id)  # its results won the race
    watch.monitor.tick(5.0)
    assert watch.lost == [] and sleeper.poll() is None


def test_monitor_lists_running_jobs():
    watch = Watch()
    watch.put(0, os.getpid(), 3, 10)
    watch.put(1, os.getpid(), 3, NO_JOB)
    watch.put(2, os.getpid(), 4, 11)
    assert sorted(slot.job for slot in watch.monitor.running()) == [10, 11]


def test_monitor_stops_a_job_the_broker_asked_to_stop_as_soon_as_it_runs(sleeper):
    watch = Watch()
    chunk = watch.book.open("t", [job(1), job(2), job(3)], ignore)
    watch.live = [Reaped(sleeper.pid, None)]
    watch.put(0, sleeper.pid, chunk.id, 1)
    watch.monitor.stop_jobs([2, 99])
    watch.monitor.tick(0.0)
    assert watch.lost == [] and sleeper.poll() is None  # job 1 runs on
    watch.put(0, sleeper.pid, chunk.id, 2)
    watch.monitor.tick(0.05)
    ((lost, kind, message),) = watch.lost
    assert kind == "Cancelled" and "stopped" in message
    assert lost.blamed == job(2) and lost.rerun == [job(1), job(3)]
    assert sleeper.wait(10) == -signal.SIGKILL
    # Ids in no chunk of the book (99: never here) are forgotten.
    assert watch.monitor._to_stop == set()


def test_monitor_forgets_a_stop_whose_chunk_came_back_first(sleeper):
    watch = Watch()
    chunk = watch.book.open("t", [job(1)], ignore)
    watch.live = [Reaped(sleeper.pid, None)]
    watch.monitor.stop_jobs([1])
    watch.book.finish(chunk.id)  # the result won the race
    watch.put(0, sleeper.pid, chunk.id, 1)
    watch.monitor.tick(0.0)
    assert watch.lost == [] and sleeper.poll() is None
    assert watch.monitor._to_stop == set()
