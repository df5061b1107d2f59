"""Broker status as a transcript of BrokerState calls, with `now` passed in;
the counting pieces of broker/stats.py; the text report; Executor task names."""

from __future__ import annotations

import functools

import pytest

from sockpool.broker.report import format_age, format_status
from sockpool.broker.state import BrokerState
from sockpool.broker.stats import OTHER_TASKS, BrokerStats, LatencyHistogram, Throughput, failed_calls
from sockpool.client.executor import task_name
from sockpool.protocol import (
    PROTOCOL_VERSION, Credit, Hello, Jobs, ProtocolError, Results, StatusReply, StatusRequest, Submit, decode, encode,
)
from sockpool.protocol.defaults import MAX_TRACKED_TASKS
from tests import tasks
from sockpool.worker import tasks as builtin_tasks

WORKER, CLIENT = 1, 2


def started_state() -> BrokerState:
    state = BrokerState("b", 1 << 20, now=100.0)
    state.on_hello(WORKER, Hello(PROTOCOL_VERSION, "worker", name="w1", tasks=["square"], processes=2), "10.0.0.1:5", 100.0)
    state.on_hello(CLIENT, Hello(PROTOCOL_VERSION, "client", session="s"), "10.0.0.2:6", 100.0)
    return state


def test_status_follows_jobs_from_submit_to_result():
    state = started_state()
    # A plain job, a map chunk of three items, a task nobody serves.
    state.on_message(CLIENT, Submit(1, [[1, "square", [2], {}, False], [2, "square", [1, 2, 3], {}, True],
                                        [3, "nosuch", [], {}, False]]), 101.0)
    status = state.status(101.0)
    assert status["queue"] == {"ready": 5, "in_flight": 0, "delayed": 0, "waiting_on_limit": 0, "failed": 0}
    assert status["totals"]["submitted"] == 5 and status["totals"]["refused"] == 0
    assert status["tasks"] == {"square": {"submitted": 4, "completed": 0, "failed": 0},
                               "nosuch": {"submitted": 1, "completed": 0, "failed": 0}}
    assert status["unserved"] == [{"task": "nosuch", "jobs": 1, "waiting_s": 0.0, "fails_in_s": 10.0}]

    out = state.on_message(WORKER, Credit(2), 101.5)
    [jobs] = [m for _, m in out if isinstance(m, Jobs)]
    status = state.status(101.5)
    assert status["queue"]["ready"] == 1 and status["queue"]["in_flight"] == 4  # nosuch still waits
    assert status["workers"][0]["in_flight"] == 4

    gid_single, gid_chunk = (entry[0] for entry in jobs.jobs)
    chunk_error = {"type": "TypeError", "message": "bad", "traceback": "tb", "items": [[True, 1], [False, {}], [True, 9]]}
    state.on_message(WORKER, Results([[gid_single, True, 4], [gid_chunk, False, chunk_error]]), 103.0)
    status = state.status(104.0)
    assert status["queue"]["in_flight"] == 0
    assert status["tasks"]["square"] == {"submitted": 4, "completed": 3, "failed": 1}
    assert status["totals"]["completed"] == 3 and status["totals"]["failed"] == 1
    [worker] = status["workers"]
    assert (worker["name"], worker["address"], worker["processes"]) == ("w1", "10.0.0.1:5", 2)
    assert (worker["done"], worker["failed"], worker["last_seen_s"], worker["joined_s"]) == (3, 1, 1.0, 4.0)
    assert status["uptime_s"] == 4.0
    # Queue wait 101 -> 101.5 and run time 101.5 -> 103, once per job.
    assert status["latency"]["queue_wait"]["count"] == 2 and status["latency"]["queue_wait"]["sum"] == 1.0
    assert status["latency"]["run"]["sum"] == 3.0
    assert status["throughput"]["history"][-2] == 4  # the second 103 holds all four calls
    assert [f["type"] for f in status["recent_failures"]] == ["TypeError"]
    assert status["recent_failures"][0]["worker"] == "w1" and status["recent_failures"][0]["age_s"] == 1.0
    # Nobody came for 'nosuch' within the grace: it fails.
    state.tick(111.0)
    status = state.status(111.0)
    assert [f["type"] for f in status["recent_failures"]] == ["UnknownTask", "TypeError"]
    assert status["tasks"]["nosuch"] == {"submitted": 1, "completed": 0, "failed": 1}
    assert status["unserved"] == [] and status["queue"]["ready"] == 0


def test_status_request_is_answered_to_clients_only():
    state = started_state()
    [(conn, reply)] = state.on_message(CLIENT, StatusRequest(), 105.0)
    assert conn == CLIENT and isinstance(reply, StatusReply)
    assert decode(encode(reply)[4:]) == reply  # the status survives msgpack
    with pytest.raises(ProtocolError):
        state.on_message(WORKER, StatusRequest(), 105.0)


def test_a_requeued_job_is_ready_again():
    state = started_state()
    state.on_message(CLIENT, Submit(1, [[1, "square", [1, 2], {}, True]]), 101.0)
    state.on_message(WORKER, Credit(1), 101.0)
    assert state.status(101.0)["queue"]["in_flight"] == 2
    state.on_disconnect(WORKER, 102.0)
    status = state.status(102.0)
    assert status["queue"] == {"ready": 2, "in_flight": 0, "delayed": 0, "waiting_on_limit": 0, "failed": 0}
    assert status["totals"]["requeued"] == 1 and status["workers"] == []


def test_latency_histogram_buckets_are_cumulative_with_le_bounds():
    h = LatencyHistogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0, -1.0):
        h.observe(seconds)
    assert h.to_dict() == {"buckets": [[0.1, 3], [1.0, 4], ["+Inf", 5]], "sum": 3.65, "count": 5}


def test_latency_histogram_observes_a_frame_of_values_as_one_by_one():
    many = LatencyHistogram((0.1, 1.0))
    many.observe_many([0.05, 0.1, 0.5, 3.0, -1.0])
    many.observe_many([])
    assert many.to_dict() == {"buckets": [[0.1, 3], [1.0, 4], ["+Inf", 5]], "sum": 3.65, "count": 5}


def test_throughput_keeps_a_window_of_seconds():
    t = Throughput(history_s=5)
    t.add(10.2, 3)
    t.add(10.9, 2)
    t.add(12.5, 10)
    assert t.history(12.6) == [0, 0, 5, 0, 10]
    assert t.rate(13.0, window_s=5) == 3.0  # 15 calls in the five whole seconds 8..12
    t.add(20.0, 1)  # the older seconds fall out of the ring
    assert t.history(20.0) == [0, 0, 0, 0, 1]


def test_task_names_beyond_the_cap_are_summed_together():
    stats = BrokerStats()
    for n in range(MAX_TRACKED_TASKS + 5):
        stats.on_submitted(f"t{n}", 1)
    assert len(stats.tasks) == MAX_TRACKED_TASKS + 1
    assert stats.tasks[OTHER_TASKS][0] == 5


@pytest.mark.parametrize("value, calls, failed", [
    ({"items": [[True, 1], [False, {}]]}, 2, 1),
    ({"type": "X"}, 3, 3),  # the chunk failed as a whole
    ({"items": [[True, 1]]}, 3, 3),  # items that do not match the chunk: trust none
    ("not a map", 1, 1),
])
def test_failed_calls(value, calls, failed):
    assert failed_calls(value, calls) == failed


def test_text_report_lists_workers_tasks_and_failures():
    state = started_state()
    state.on_message(CLIENT, Submit(1, [[1, "square", [2], {}, False]]), 101.0)
    text = format_status(state.status(101.0))
    assert any(line.split()[:5] == ["w1", "10.0.0.1:5", "2", "0", "0"] for line in text.splitlines())
    assert any(line.split() == ["square", "1", "0", "0"] for line in text.splitlines())
    assert "ready 1" in text
    assert format_age(5) == "5.0 s" and format_age(300) == "5 min" and format_age(7500) == "2 h 05 min"


def _private_helper() -> None:
    pass


def test_executor_task_names():
    assert task_name(tasks.add) == "tests.tasks:add"
    assert task_name(builtin_tasks.square) == "square"

    def nested() -> None:
        pass

    main_fn = type(tasks.add)(tasks.add.__code__, {"__name__": "__main__"}, "script_fn")
    main_fn.__module__ = "__main__"
    for fn, why in [
        (lambda: None, "top-level"), (nested, "top-level"), (len, "plain function"),
        (functools.partial(tasks.add, 1), "plain function"), (_private_helper, "private"), (main_fn, "__main__"),
    ]:
        with pytest.raises(TypeError, match=why):
            task_name(fn)


def test_metrics_port_beyond_loopback_is_warned_about():
    from sockpool.broker.observe import exposure_warning

    assert exposure_warning("127.0.0.1", "127.0.0.1:9341") is None
    assert exposure_warning("::1", "[::1]:9341") is None
    for host in ("0.0.0.0", "10.1.2.3", "broker.example"):
        warning = exposure_warning(host, f"{host}:9341")
        assert warning is not None and "no authentication" in warning
