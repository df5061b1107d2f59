"""worker/outbox.py: a node's credit and what it owes the broker, with no sockets."""

from __future__ import annotations

from sockpool.worker.outbox import Outbox


def test_outbox_grants_the_window_less_what_is_on_hand_and_unused():
    window = [4]
    outbox = Outbox(lambda: window[0])
    assert outbox.first_grant() == 4
    assert outbox.received([1, 2, 3])
    outbox.finished(b"\x92\x01\x02", 2, [])
    due = outbox.take()
    # 1 job still on hand, 1 credit unused: room for 2 more.
    assert due is not None and due.packed == [b"\x92\x01\x02"] and due.grant == 2
    assert outbox.outstanding == 1
    outbox.written()
    window[0] = 10  # jobs got quicker: more prefetch
    outbox.finished(b"\x91\x03", 1, [])
    assert outbox.take().grant == 7  # window 10 - 0 on hand - 3 unused
    assert not due.drained


def test_outbox_sends_pings_and_pongs_without_granting():
    outbox = Outbox(lambda: 2)
    outbox.first_grant()
    outbox.ask(ping=True)
    outbox.ask(pong=True)
    due = outbox.take()
    assert due is not None and due.ping and due.pong and due.grant == 0 and not due.packed


def test_outbox_drain_grants_nothing_releases_late_jobs_and_ends_when_all_are_back():
    outbox = Outbox(lambda: 8)
    outbox.first_grant()
    assert outbox.received([1, 2, 3])
    outbox.start_drain()
    assert not outbox.received([4])  # sent before the broker read our drain
    due = outbox.take()
    assert due is not None and due.drain and due.released == [4] and not due.drained
    outbox.written()
    outbox.finished(b"\x91\x01", 1, [2, 3])  # one ran; two never started
    due = outbox.take()
    assert due.packed == [b"\x91\x01"] and due.released == [2, 3] and due.grant == 0
    assert due.drained and outbox.outstanding == 0


def test_outbox_drain_with_nothing_on_hand_is_done_at_once():
    outbox = Outbox(lambda: 8)
    outbox.start_drain()
    due = outbox.take()
    assert due is not None and due.drain and due.drained


def test_a_closed_outbox_drops_late_results_and_takes_nothing():
    outbox = Outbox(lambda: 2)
    outbox.received([1])
    outbox.close()
    outbox.finished(b"\x91\x01", 1, [])
    assert outbox.take() is None


def test_results_go_to_the_thread_that_has_them_when_nothing_else_is_under_way():
    outbox = Outbox(lambda: 2)
    outbox.first_grant()
    assert outbox.received([1])
    due = outbox.finished(b"\x91\x01", 1, [], write_now=True)
    assert due is not None and due.packed == [b"\x91\x01"] and due.grant == 1
    assert outbox.outstanding == 0


def test_no_second_writer_while_a_write_is_under_way():
    outbox = Outbox(lambda: 2)
    outbox.first_grant()
    assert outbox.received([1])
    first = outbox.finished(b"\x91\x01", 1, [], write_now=True)
    assert first is not None
    assert outbox.received([2])
    # Under way: the next result waits for the writer, and so does take().
    assert outbox.finished(b"\x91\x02", 1, [], write_now=True) is None
    assert outbox.take_now() is None
    outbox.written()
    due = outbox.take()
    assert due is not None and due.packed == [b"\x91\x02"]


def test_results_wait_for_the_sending_thread_while_other_jobs_here_still_run():
    outbox = Outbox(lambda: 4)
    outbox.first_grant()
    assert outbox.received([1, 2, 3])
    assert outbox.finished(b"\x91\x01", 1, [], write_now=True) is None
    assert outbox.finished(b"\x92\x02\x03", 2, [], write_now=True) is not None  # the last: all at once
    outbox.written()


def test_what_a_write_left_unsent_goes_first_in_the_next():
    outbox = Outbox(lambda: 2)
    outbox.first_grant()
    assert outbox.received([1])
    assert outbox.finished(b"\x91\x01", 1, [], write_now=True) is not None
    outbox.written([b"rest of frame"])
    # Nothing else due: the sending thread takes the rest alone.
    due = outbox.take()
    assert due is not None and due.unsent == [b"rest of frame"] and not due.packed
    outbox.written()
    assert outbox.received([2])
    outbox.finished(b"\x91\x02", 1, [])
    assert outbox.take().unsent == []


def test_pings_pongs_and_drains_stay_with_the_sending_thread():
    for ask in ({"ping": True}, {"pong": True}):
        outbox = Outbox(lambda: 2)
        outbox.first_grant()
        assert outbox.received([1])
        outbox.ask(**ask)
        assert outbox.finished(b"\x91\x01", 1, [], write_now=True) is None
        due = outbox.take()
        assert due is not None and due.packed == [b"\x91\x01"]
    outbox = Outbox(lambda: 2)
    assert outbox.received([1])
    outbox.start_drain()
    assert outbox.finished(b"\x91\x01", 1, [], write_now=True) is None
