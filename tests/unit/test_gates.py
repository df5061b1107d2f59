"""worker/gates.py: successors wait outside the pool until their holder ended here."""

from __future__ import annotations

import pytest

from sockpool.protocol import ProtocolError
from sockpool.worker.gates import Gates


def entry(gid: int) -> list:
    return [gid, "fetch", [gid], {}, False]


def done(*args) -> None:
    pass


def test_a_successor_waits_for_its_holder_and_then_holds_the_slot_itself():
    gates, tag = Gates(), object()
    assert gates.sort(tag, [entry(1)], [1], [], done) == [entry(1)]
    assert gates.sort(tag, [entry(2)], [], [[2, 1]], done) == []
    assert gates.ended([7]) == []  # some other job
    [(got_tag, got, _)] = gates.ended([1])
    assert got_tag is tag and got == entry(2)
    # Its own successor waits for it in turn.
    assert gates.sort(tag, [entry(3)], [], [[3, 2]], done) == []
    assert [w[1] for w in gates.ended([2])] == [entry(3)]
    assert gates.ended([3]) == [] and not gates.active


def test_a_successor_of_a_holder_that_already_ended_here_runs_at_once():
    gates, tag = Gates(), object()
    gates.sort(tag, [entry(1)], [1], [], done)
    gates.ended([1])
    assert gates.sort(tag, [entry(2)], [], [[2, 1]], done) == [entry(2)]
    # And the holder and its successor in one message: the holder runs, the successor waits.
    assert gates.sort(tag, [entry(5), entry(6)], [5], [[6, 5]], done) == [entry(5)]


def test_handed_back_stopped_drained_and_dropped_successors_never_start():
    gates, tag, other = Gates(), object(), object()
    gates.sort(tag, [entry(1), entry(2)], [1], [[2, 1]], done)
    assert [w[1] for w in gates.handed_back([1])] == [entry(2)]
    gates.sort(tag, [entry(3), entry(4)], [3], [[4, 3]], done)
    assert [w[1] for w in gates.stop([4])] == [entry(4)] and gates.ended([3]) == []
    gates.sort(tag, [entry(5), entry(6)], [5], [[6, 5]], done)
    assert [w[1] for w in gates.take_all()] == [entry(6)] and gates.ended([5]) == []
    gates.sort(tag, [entry(7), entry(8)], [7], [[8, 7]], done)
    gates.sort(other, [entry(9), entry(10)], [9], [[10, 9]], done)
    gates.drop(tag)
    assert gates.ended([7]) == [] and [w[1] for w in gates.ended([9])] == [entry(10)]


def test_a_second_successor_for_one_holder_is_refused():
    gates, tag = Gates(), object()
    gates.sort(tag, [entry(1), entry(2)], [1], [[2, 1]], done)
    with pytest.raises(ProtocolError, match="second successor"):
        gates.sort(tag, [entry(3)], [], [[3, 1]], done)


def test_each_holder_without_a_successor_wants_room_for_one():
    gates, tag = Gates(), object()
    gates.sort(tag, [entry(1), entry(2)], [1, 2], [], done)
    assert gates.wanted == 2
    gates.sort(tag, [entry(3)], [], [[3, 1]], done)
    assert gates.wanted == 1  # 1 has its successor; 3 cannot have one before it starts
    gates.ended([1])  # 3 starts and holds the slot: it may have one now
    assert gates.wanted == 2
    gates.ended([2, 3])
    assert gates.wanted == 0
