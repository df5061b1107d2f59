"""protocol/batch.py: result arrays spliced into a `results` body without unpacking."""

from __future__ import annotations

import msgpack
import pytest

from sockpool.protocol import ProtocolError, Results, decode, error_value, pack_body
from sockpool.protocol.batch import pack_results, results_body


def entries(start: int, count: int) -> list[list[object]]:
    return [[i, i % 3 != 0, ({"v": i} if i % 2 else f"r{i}") if i % 3 else {"type": "E", "message": f"r{i}"}] for i in range(start, start + count)]


def packed(batch: list[list[object]]) -> bytes:
    return msgpack.packb(batch, use_bin_type=True)


# -- results_body -------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes,credit",
    [
        ([], 0),
        ([0], 1),
        ([1], 0),
        ([3, 4], 7),
        ([15], 1 << 24),
        ([10, 6], 0),  # crosses from a fixarray to an array16 when joined
        ([16], 128),
        ([40, 0, 40], 70000),
        ([65535], 3),
        ([65535, 1], 0),  # crosses into an array32 when joined
        ([30000, 30000, 10000], 1 << 16),
        ([65536], 0),
    ],
    ids=lambda s: "+".join(map(str, s)) or "none" if isinstance(s, list) else f"credit={s}",
)
def test_results_body_equals_packing_the_message(sizes, credit):
    batches, start = [], 0
    for size in sizes:
        batches.append(entries(start, size))
        start += size
    joined = [e for b in batches for e in b]
    body = results_body([packed(b) for b in batches], credit)
    assert body == pack_body(Results(joined, credit).to_wire())
    msg = decode(body)
    assert msg.credit == credit
    assert len(msg.results) == len(joined)
    assert msg.results[-1:] == joined[-1:]


def test_results_body_with_unicode_and_bytes_values():
    batch = [[1, True, "é" * 40], [2, True, b"\x00" * 300], [3, False, error_value("E", "m", "tb")]]
    body = results_body([packed(batch[:1]), packed(batch[1:])], 2)
    assert body == pack_body(Results(batch, 2).to_wire())


def test_results_body_refuses_a_non_array():
    with pytest.raises(ProtocolError):
        results_body([packed([[1, True, 1]]), packed({"not": "an array"})], 0)


# -- pack_results -----------------------------------------------------------------------


def never_called(entry, exc):  # pragma: no cover - must not run
    raise AssertionError(f"callback called for {entry!r}: {exc!r}")


def test_pack_results_of_encodable_entries_is_plain_msgpack():
    batch = entries(0, 20)
    assert pack_results(batch, never_called) == packed(batch)
    assert pack_results([], never_called) == b"\x90"


def test_pack_results_replaces_only_the_unencodable_entries():
    calls = []

    def replace(entry, exc):
        calls.append((entry[0], type(exc)))
        return [entry[0], False, error_value("UnencodableResult", str(exc))]

    bad, huge = object(), 2**70
    batch = [[1, True, 1], [2, True, bad], [3, True, "ok"], [4, True, [huge]], [5, False, {"x": None}]]
    out = msgpack.unpackb(pack_results(batch, replace))
    assert [c[0] for c in calls] == [2, 4]
    assert all(issubclass(t, Exception) for _, t in calls)
    assert out[0] == [1, True, 1]
    assert out[2] == [3, True, "ok"]
    assert out[4] == [5, False, {"x": None}]
    for i in (1, 3):
        assert out[i][:2] == [i + 1, False]
        assert out[i][2]["type"] == "UnencodableResult"
    # And the replaced batch still splices into a valid `results` message.
    msg = decode(results_body([pack_results(batch, replace)], 1))
    assert isinstance(msg, Results) and len(msg.results) == 5


def test_pack_results_callback_gets_the_original_entry():
    seen = []
    entry = [9, True, {1j}]
    pack_results([entry], lambda e, exc: seen.append(e) or [9, False, None])
    assert seen == [entry]


def test_pack_results_output_is_always_decodable():
    """A map with integer keys encodes, but `unpack_body` (strict_map_key)
    refuses it: unchecked, it cost the worker its connection and the job was
    requeued forever."""
    def replace(entry, exc):
        return [entry[0], False, error_value("UnencodableResult", str(exc))]

    body = results_body([pack_results([[1, True, {1: "a"}], [2, True, 2]], replace)], 1)
    msg = decode(body)  # what the broker does with the worker's frame
    assert [e[:2] for e in msg.results] == [[1, False], [2, True]]
    assert msg.results[0][2]["type"] == "UnencodableResult"


def test_submit_frame_from_packed_entries_equals_encode():
    from sockpool.client.packing import pack_entry, submit_frame
    from sockpool.protocol import Submit, encode, pack_body

    for jobs in ([], [[1, "t", [b"x" * 300_000], {}, False]], [[i, "t", [i], {}, False] for i in range(20)]):
        assert b"".join(submit_frame(7, [[pack_body(j)] for j in jobs])) == encode(Submit(7, jobs))
        assert b"".join(submit_frame(7, [pack_entry(j) for j in jobs])) == encode(Submit(7, jobs))


def test_pack_entry_checks_what_the_broker_would_refuse_large_values_or_not():
    import pytest

    from sockpool.client.packing import pack_entry
    from sockpool.protocol import ProtocolError
    from sockpool.protocol.splice import SPLICE_BYTES

    big = b"x" * SPLICE_BYTES
    assert any(p is big for p in pack_entry([1, "t", [big, 2], {}, False]))
    for bad in ([1, "t", [big, {1: 2}], {}, False], [1, "t", [big], {"k": object()}, False], [1, "t", [{1: 2}], {}, False]):
        with pytest.raises(ProtocolError):
            pack_entry(bad)
