"""broker/succession.py: a limit's slot passing on at a worker, driven by `now`."""

from __future__ import annotations

import random

from sockpool.broker.limits import LimitSpec
from sockpool.broker.state import BrokerState
from sockpool.protocol import PROTOCOL_VERSION, Credit, Hello, Jobs, Release, Results, Submit
from sockpool.protocol.control import Cancel

from .test_state import C1, MAX, W1, W2, client, job_ids


def capable_worker(state: BrokerState, conn: int, processes: int = 2, now: float = 0.0, successors: bool = True):
    hello = Hello(PROTOCOL_VERSION, "worker", name=f"w{conn}", tasks=["fetch", "square"], processes=processes,
                  successors=successors)
    return state.on_hello(conn, hello, f"h:{conn}", now)


def after_pairs(out: list, conn: int) -> list[list[int]]:
    return [pair for c, m in out if c == conn and isinstance(m, Jobs) for pair in m.after]


def holders(out: list, conn: int) -> list[int]:
    return [gid for c, m in out if c == conn and isinstance(m, Jobs) for gid in m.holders]


def limited(capacity: int = 1, **spec) -> BrokerState:
    state = BrokerState("b1", MAX, limits={"fetch": LimitSpec(capacity, **spec)})
    client(state, C1, "s1")
    return state


def submit(state: BrokerState, cids, now: float = 1.0, task: str = "fetch") -> list:
    return state.on_message(C1, Submit(int(now * 10), [[i, task, [i], {}, False] for i in cids]), now)


def slots_held(state: BrokerState) -> int:
    return sum(1 for job in state.jobs.values() if job.limits)


def test_the_next_job_goes_to_the_holders_worker_to_start_after_it_and_takes_its_slot():
    state = limited(1)
    capable_worker(state, W1)
    state.on_message(W1, Credit(4), 0.1)
    out = submit(state, [1, 2, 3, 4])
    [first, second] = job_ids(out, W1)
    assert holders(out, W1) == [first]
    assert after_pairs(out, W1) == [[second, first]]
    assert slots_held(state) == 1 and state.jobs[second].limits is None
    assert state.limits.status(1.0)["fetch"] == {"limit": 1, "per_s": None, "held": 1, "waiting": 2}
    # The holder ends: its slot passes on (nothing is admitted into the
    # ready queue), and the successor's own successor goes out.
    out = state.on_message(W1, Results([[first, True, 0]], credit=1), 2.0)
    [third] = job_ids(out, W1)
    assert after_pairs(out, W1) == [[third, second]]
    assert state.jobs[second].limits == ("fetch",) and slots_held(state) == 1
    assert state.ready_count == 0 and state.limits.waiting == 1
    out = state.on_message(W1, Results([[second, True, 0]], credit=1), 3.0)
    out += state.on_message(W1, Results([[third, True, 0]], credit=1), 4.0)
    assert len(job_ids(out, W1)) == 1 and slots_held(state) == 1
    # In submission order, every one of them.
    assert [state.jobs[g].cid for g in job_ids(out, W1)] == [4]


def test_a_worker_that_did_not_ask_gets_no_successor():
    state = limited(1)
    capable_worker(state, W1, successors=False)
    state.on_message(W1, Credit(4), 0.1)
    out = submit(state, [1, 2, 3])
    assert len(job_ids(out, W1)) == 1 and after_pairs(out, W1) == [] and holders(out, W1) == []
    assert state.limits.waiting == 2


def test_a_rate_limit_passes_nothing_on():
    state = limited(1, per_s=10.0)
    capable_worker(state, W1)
    state.on_message(W1, Credit(4), 0.1)
    out = submit(state, [1, 2])
    assert len(job_ids(out, W1)) == 1 and after_pairs(out, W1) == []


def test_a_holder_that_fails_for_a_retry_hands_its_slot_to_its_successor():
    state = limited(1)
    capable_worker(state, W1)
    state.on_message(W1, Credit(4), 0.1)
    state.on_message(C1, Submit(1, [[1, "fetch", [1], {}, False, {"retries": 2}], [2, "fetch", [2], {}, False]]), 1.0)
    first, second = sorted(state.jobs)
    state.on_message(W1, Results([[first, False, {"type": "ValueError", "message": "x", "traceback": ""}]]), 2.0)
    assert state.jobs[second].limits == ("fetch",) and state.jobs[first].limits is None
    assert len(state.due) == 1 and slots_held(state) == 1


def test_a_successor_lost_with_its_worker_goes_back_to_the_front_of_the_line_holding_nothing():
    state = limited(1)
    capable_worker(state, W1)
    state.on_message(W1, Credit(4), 0.1)
    out = submit(state, [1, 2, 3])
    first, second = job_ids(out, W1)
    state.on_disconnect(W1, 2.0)
    assert state.jobs[first].limits == ("fetch",) and state.jobs[second].limits is None
    assert state.ready_count == 1 and state.limits.waiting == 2
    capable_worker(state, W2, now=3.0)
    out = state.on_message(W2, Credit(4), 3.0)
    # The holder again, and the same successor (first in line again), not the third job.
    assert job_ids(out, W2) == [first, second] and after_pairs(out, W2) == [[second, first]]
    assert not state.succession.after.keys() - {second}


def test_a_stopped_successor_makes_room_for_the_next_one_in_line():
    state = limited(1)
    capable_worker(state, W1)
    state.on_message(W1, Credit(4), 0.1)
    out = submit(state, [1, 2, 3])
    first, second = job_ids(out, W1)
    out = state.on_message(C1, Cancel(ids=[2], stop=True), 2.0)
    [third] = job_ids(out, W1)
    assert after_pairs(out, W1) == [[third, first]]
    state.on_message(W1, Results([[first, True, 0]]), 3.0)
    assert state.jobs[third].limits == ("fetch",) and slots_held(state) == 1


def test_a_holder_handed_back_unrun_takes_its_successor_back_with_it():
    state = limited(1)
    capable_worker(state, W1)
    state.on_message(W1, Credit(2), 0.1)
    out = submit(state, [1, 2, 3])
    first, second = job_ids(out, W1)
    state.on_message(W1, Release([first, second]), 2.0)
    assert state.jobs[first].limits == ("fetch",) and state.jobs[first].worker is None
    assert state.limits.first_waiting("fetch") is state.jobs[second]
    assert not state.succession.next and not state.succession.after


def test_the_limit_holds_under_random_results_losses_stops_and_hand_backs():
    """A model of capable workers that start a successor only once its
    holder ended there: at no step do more jobs run than the capacity."""
    rng = random.Random(7)
    for capacity in (1, 2, 3):
        state = limited(capacity)
        running: dict[int, set[int]] = {}  # worker -> jobs running there
        gated: dict[int, dict[int, int]] = {}  # worker -> job -> holder it waits for
        conns = [W1, W2]
        for conn in conns:
            capable_worker(state, conn, processes=2)
            running[conn], gated[conn] = set(), {}
        now = 1.0
        submit(state, range(1, 61), now)
        cid = 100

        def receive(out: list) -> None:
            for conn, msg in out:
                if isinstance(msg, Jobs) and conn in running:
                    waits = dict((gid, holder) for gid, holder in msg.after)
                    for entry in msg.jobs:
                        holder = waits.get(entry[0])
                        if holder is not None and holder in running[conn] | set(gated[conn]):
                            gated[conn][entry[0]] = holder
                        else:
                            running[conn].add(entry[0])

        def ended(conn: int, gid: int) -> None:
            running[conn].discard(gid)
            for waiting, holder in list(gated[conn].items()):
                if holder == gid:
                    del gated[conn][waiting]
                    running[conn].add(waiting)

        for step in range(400):
            now += 0.5
            conn = rng.choice(conns)
            roll = rng.random()
            if conn not in state.workers:
                capable_worker(state, conn, now=now)
                running[conn], gated[conn] = set(), {}
                receive(state.on_message(conn, Credit(3), now))
            elif roll < 0.55 and running[conn]:
                gid = rng.choice(sorted(running[conn]))
                ended(conn, gid)
                ok = rng.random() < 0.8
                value = 0 if ok else {"type": "ValueError", "message": "x", "traceback": ""}
                receive(state.on_message(conn, Results([[gid, ok, value]], credit=1), now))
            elif roll < 0.65:
                state.on_disconnect(conn, now)
                running[conn], gated[conn] = set(), {}
            elif roll < 0.72 and gated[conn]:
                gid = rng.choice(sorted(gated[conn]))
                receive(state.on_message(C1, Cancel(gids=[gid], stop=True), now))
                del gated[conn][gid]
            elif roll < 0.8 and gated[conn]:
                # Hand back a holder not yet started? Ours have all started: hand back a gated one.
                gid = rng.choice(sorted(gated[conn]))
                del gated[conn][gid]
                receive(state.on_message(conn, Release([gid]), now))
                receive(state.on_message(conn, Credit(1), now))
            elif roll < 0.9:
                receive(state.on_message(conn, Credit(1), now))
            else:
                cid += 1
                receive(submit(state, [cid], now))
            receive(state.tick(now))
            assert sum(len(r) for r in running.values()) <= capacity, step
            assert slots_held(state) <= capacity, step


def test_holders_are_forgotten_as_they_finish_when_nothing_waits():
    # A limit never full: no successor is ever named, and the index of
    # holders does not grow with the jobs that passed through.
    state = limited(4)
    capable_worker(state, W1, processes=4)
    state.on_message(W1, Credit(4), 0.1)
    now = 1.0
    for cid in range(1, 41):
        [gid] = job_ids(submit(state, [cid], now), W1)
        state.on_message(W1, Results([[gid, True, 0]], credit=1), now + 0.5)
        now += 1.0
    assert state.succession.holders == {} and slots_held(state) == 0


def test_a_key_limit_passes_on_too_and_looking_does_not_change_its_capacity():
    state = BrokerState("b1", MAX)
    client(state, C1, "s1")
    capable_worker(state, W1, processes=4)
    state.on_message(W1, Credit(6), 0.1)
    entries = [[i, "fetch", [i], {}, False, {"limit_key": "cust-7", "limit": 1}] for i in (1, 2, 3)]
    entries.append([4, "fetch", [4], {}, False, {"limit_key": "cust-7", "limit": 2}])  # the latest capacity wins
    out = state.on_message(C1, Submit(1, entries), 1.0)
    first, second = job_ids(out, W1)[:2]
    assert after_pairs(out, W1) == [[second, first]]
    # Looking at the second job for a successor did not set the capacity back to its 1.
    assert state.limits.status(1.0)["cust-7"]["limit"] == 2
