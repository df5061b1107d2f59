"""Property tests of the protocol layer: round trips, and no crash on any input."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockpool.protocol import (
    Accepted,
    Ack,
    Credit,
    Decoder,
    Drain,
    Error,
    FailedJobs,
    Hello,
    Jobs,
    ListFailed,
    Message,
    Ping,
    Pong,
    ProtocolError,
    Release,
    Results,
    Submit,
    Welcome,
    decode,
    encode,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Everything msgpack round-trips exactly (as decoded with raw=False,
# strict_map_key=True): no tuples, no NaN, only string map keys.
# Messages as a valid peer sends them: every wire integer fits 64 signed
# bits (protocol/limits.py); inside values, anything msgpack encodes.
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
any_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
counts = st.integers(min_value=0, max_value=4096)
text = st.text(max_size=12)
scalars = st.none() | st.booleans() | any_ints | st.floats(allow_nan=False) | text | st.binary(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)

floats = st.floats(allow_nan=False, allow_infinity=False)
options = st.fixed_dictionaries(
    {},
    optional={
        "timeout": st.floats(min_value=1e-6, max_value=1e6) | st.integers(min_value=1, max_value=2**21),
        "retries": st.integers(min_value=0, max_value=100),
        "future": values,
    },
)
job_base = st.tuples(ints, text, st.lists(values, max_size=3), st.dictionaries(text, values, max_size=3), st.booleans())
job_entries = st.one_of(job_base.map(list), st.tuples(job_base, options).map(lambda t: [*t[0], t[1]]))
id_lists = st.lists(ints, max_size=5)
errors = st.fixed_dictionaries({"type": text}, optional={"message": text, "traceback": text})
result_entries = st.one_of(
    st.tuples(ints, st.just(True), values).map(list), st.tuples(ints, st.just(False), errors).map(list)
)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, version=ints, role=text, name=text, session=text, tasks=st.lists(text, max_size=4), processes=counts),
    st.builds(
        Welcome, version=ints, broker=text, max_frame_bytes=ints, session=text, processes=counts, heartbeat_s=floats, jobs=ints
    ),
    st.builds(Error, code=text, message=text),
    st.builds(Submit, batch=ints, jobs=st.lists(job_entries, max_size=4)),
    st.builds(Accepted, batch=ints, count=ints),
    st.builds(Jobs, jobs=st.lists(job_entries, max_size=4)),
    st.builds(Results, results=st.lists(result_entries, max_size=4), credit=counts),
    st.builds(Credit, credit=counts),
    st.builds(Release, ids=id_lists),
    st.just(Drain()),
    st.builds(Ack, ids=id_lists, all=st.booleans()),
    st.just(ListFailed()),
    st.builds(FailedJobs, jobs=st.lists(st.lists(values, max_size=6), max_size=3)),
    st.builds(Ping, running=id_lists),
    st.just(Pong()),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` in pieces at the given cut points (any order, duplicates allowed)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def feed_all(dec: Decoder, pieces: list[bytes], eof: bool = True) -> tuple[list[Message], ProtocolError | None]:
    """Feed the pieces, draining after each; stop at the first ProtocolError."""
    out: list[Message] = []
    try:
        for piece in pieces + ([b""] if eof else []):
            dec.feed(piece)
            while (msg := dec.next_message()) is not None:
                out.append(msg)
    except ProtocolError as exc:
        return out, exc
    return out, None


@FAST
@given(messages)
def test_decode_encode_round_trip(msg):
    data = encode(msg)
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    assert decode(data[4:]) == msg


@FAST
@given(st.lists(messages, max_size=5), st.lists(st.integers(min_value=0), max_size=20))
def test_stream_of_messages_in_any_split(msgs, cuts):
    data = b"".join(encode(m) for m in msgs)
    dec = Decoder()
    got, error = feed_all(dec, split(data, cuts))
    assert error is None
    assert got == msgs
    assert dec.at_eof


@FAST
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=10), st.integers(min_value=0, max_value=400))
def test_arbitrary_bytes_yield_messages_or_protocol_error(data, cuts, max_frame_bytes):
    got, _ = feed_all(Decoder(max_frame_bytes=max_frame_bytes), split(data, cuts))
    assert all(isinstance(m, Message) for m in got)


@FAST
@given(st.lists(st.binary(max_size=40), max_size=6), st.lists(st.integers(min_value=0), max_size=10))
def test_well_framed_garbage_yields_messages_or_protocol_error(garbage_bodies, cuts):
    # Valid framing around arbitrary bodies reaches the msgpack and message checks.
    data = b"".join(len(b).to_bytes(4, "big") + b for b in garbage_bodies)
    got, error = feed_all(Decoder(), split(data, cuts))
    assert all(isinstance(m, Message) for m in got)
    if error is None:
        assert len(got) == len(garbage_bodies)


@FAST
@given(
    st.lists(messages, min_size=1, max_size=4),
    st.integers(min_value=0),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_truncated_stream_yields_the_whole_frames_then_protocol_error(msgs, cut, cuts):
    frames = [encode(m) for m in msgs]
    data = b"".join(frames)
    cut %= len(data)  # strictly shorter than the whole stream
    got, error = feed_all(Decoder(), split(data[:cut], cuts))
    assert got == msgs[: len(got)]
    boundaries = {sum(len(f) for f in frames[:i]) for i in range(len(frames) + 1)}
    if cut in boundaries:
        assert error is None
    else:
        assert error is not None and "truncated frame" in str(error)


@FAST
@given(
    st.lists(messages, min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), min_size=1, max_size=4),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_corrupted_stream_yields_messages_or_protocol_error(msgs, flips, cuts):
    data = bytearray(b"".join(encode(m) for m in msgs))
    for pos, byte in flips:
        data[pos % len(data)] = byte
    got, _ = feed_all(Decoder(), split(bytes(data), cuts))
    assert all(isinstance(m, Message) for m in got)
