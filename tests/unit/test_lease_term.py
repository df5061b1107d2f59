"""The lease rule that decides whether a broker may send anything (fencing),
driven by `now` (broker/store/leadership.py)."""

from __future__ import annotations

from sockpool.broker.store.leadership import LeaseTerm


def test_valid_until_valid_s_after_the_start_of_the_taking():
    term = LeaseTerm(epoch=3, started=100.0, valid_s=2.0)
    assert term.valid(100.0) and term.valid(101.99)
    assert not term.valid(102.0)
    assert term.lost is not None and "lease expired" in term.lost


def test_a_renewal_counts_from_when_it_started_not_when_it_answered():
    term = LeaseTerm(3, 100.0, 2.0)
    term.renewed(started=101.0)  # however late its answer came
    assert term.valid(102.9)
    assert not term.valid(103.0)


def test_a_late_answer_to_an_old_renewal_never_shortens_the_term():
    term = LeaseTerm(3, 100.0, 2.0)
    term.renewed(101.5)
    term.renewed(100.5)
    assert term.valid(103.4)


def test_once_expired_it_stays_lost_even_if_a_renewal_then_succeeds():
    # A frozen broker wakes: its renewal may still find its epoch in the
    # database, but what it did not send meanwhile cannot be undone.
    term = LeaseTerm(3, 100.0, 2.0)
    assert not term.valid(105.0)
    term.renewed(105.0)
    assert not term.valid(105.1)


def test_lose_ends_the_term_once_and_keeps_the_first_reason():
    term = LeaseTerm(3, 100.0, 2.0)
    assert term.lose("fenced: broker b2 took over")
    assert not term.lose("released")
    assert not term.valid(100.1)
    assert term.lost == "fenced: broker b2 took over"
