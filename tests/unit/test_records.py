"""broker/records.py: a job keeps its arguments packed, as the store keeps them."""

from __future__ import annotations

import msgpack

from sockpool.broker.records import Job, OptionedJob
from sockpool.protocol.packed import pack_array
from sockpool.protocol.splice import SPLICE_BYTES


def test_a_small_job_keeps_one_packed_body_that_is_the_stored_row_once_stored():
    job = Job(7, "s", 1, "square", [3], {"k": 1}, False, {"retries": 2})
    assert type(job.body) is tuple  # most jobs go to a worker before the store writes them
    assert job.entry() == [7, "square", [3], {"k": 1}, False, {"retries": 2}]
    stored = job.stored_body()
    assert stored == msgpack.packb([[3], {"k": 1}, False, {"retries": 2}], use_bin_type=True)
    assert job.body is stored  # from then on it waits packed, as the row
    assert job.entry() == [7, "square", [3], {"k": 1}, False, {"retries": 2}]
    assert job.retries == 2


def test_no_options_means_a_five_element_entry():
    job = Job(7, "s", 1, "square", [3], {}, False)
    assert job.entry() == [7, "square", [3], {}, False]
    assert job.options is None and job.retries == 0


def test_a_restored_job_is_the_job_that_was_stored():
    for args, many, calls in (([3], False, 1), (pack_array([1, 2, 3]), True, 3), ([1, 2], True, 2)):
        job = Job(9, "s", 2, "t", args, {}, many)
        back = Job.restored(9, "s", 2, "t", job.stored_body(), 1)
        assert back.entry() == job.entry() and back.calls == calls == job.calls and back.attempts == 1


def test_large_arguments_stay_unpacked_and_uncopied():
    big = b"x" * SPLICE_BYTES
    job = Job(1, "s", 1, "t", [big], {}, False)
    assert job.entry()[2][0] is big
    assert msgpack.unpackb(job.stored_body(), raw=False) == [[big], {}, False, None]


def test_names_are_shared_between_jobs():
    a = Job(1, "s" * 32, 1, "".join(["squ", "are"]), [1], {}, False)
    b = Job(2, "s" * 32, 2, "".join(["squ", "are"]), [1], {}, False)
    assert a.task is b.task and a.session is b.session


def test_jobs_without_options_share_their_class_s_options_queue_and_priority():
    plain = Job.restored(1, "a", 1, "square", msgpack.packb([[1], {}, False, None]), 0)
    optioned = Job.restored(2, "a", 2, "square", msgpack.packb([[1], {}, False, {"queue": "q", "priority": 3}]), 0)
    assert type(plain) is Job and (plain.options, plain.queue, plain.priority) == (None, "default", 0)
    assert type(optioned) is OptionedJob and (optioned.queue, optioned.priority) == ("q", 3)
    assert type(Job(3, "a", 3, "square", [1], {}, False, {"retries": 2})) is OptionedJob
    assert type(Job(4, "a", 4, "square", [1], {}, False, {})) is Job
    assert not hasattr(plain, "__dict__")
