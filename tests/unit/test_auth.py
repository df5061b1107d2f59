"""protocol/auth.py and the handshake's edges: no sockets, no sleeps.

The handshake runs as a transcript between a PeerAuth and a BrokerAuth,
every message through encode and the Decoder as on the wire. Hypothesis
checks what must hold for any secret and nonce: an honest handshake
passes, a wrong secret, a replay, a reflection or any changed byte fails,
and no handshake bytes, however cut or mangled, raise anything but
ProtocolError.
"""

from __future__ import annotations

import ssl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockpool.protocol import (
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    ROLE_WORKER,
    Auth,
    AuthFailed,
    Challenge,
    Decoder,
    FrameTooLarge,
    Hello,
    Message,
    ProtocolError,
    Welcome,
    decode,
    encode,
)
from sockpool.protocol.auth import BROKER, NONCE_BYTES, PEER, BrokerAuth, PeerAuth, make_proof, new_nonce
from sockpool.protocol.handshake import looks_like_tls

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

secrets_ = st.binary(min_size=1, max_size=64)
nonces = st.binary(min_size=NONCE_BYTES, max_size=NONCE_BYTES)
roles = st.sampled_from([ROLE_CLIENT, ROLE_WORKER])


def wire(msg: Message) -> Message:
    """`msg` after a trip over the wire: encoded, then fed to a Decoder."""
    dec = Decoder()
    dec.feed(encode(msg))
    out = dec.next_message()
    assert out is not None and dec.next_message() is None
    return out


def hello(role: str) -> Hello:
    return Hello(PROTOCOL_VERSION, role, name="n", processes=1 if role == ROLE_WORKER else 0)


def welcome(proof: bytes = b"") -> Welcome:
    return Welcome(PROTOCOL_VERSION, "broker", 1 << 20, proof=proof)


def handshake(peer: PeerAuth, broker: BrokerAuth) -> list[Message]:
    """Run the whole exchange; the messages sent, in order. Raises AuthFailed."""
    sent: list[Message] = [wire(peer.hello(hello(peer.role)))]
    challenge = broker.challenge(sent[-1])  # type: ignore[arg-type]
    assert challenge is not None
    sent.append(wire(challenge))
    sent.append(wire(peer.answer(sent[-1])))  # type: ignore[arg-type]
    sent.append(wire(welcome(broker.verify(sent[-1]))))  # type: ignore[arg-type]
    peer.check_welcome(sent[-1])  # type: ignore[arg-type]
    return sent


# -- what must hold for every secret and nonce ----------------------------------


@FAST
@given(secrets_, roles, nonces, nonces)
def test_an_honest_handshake_passes(secret, role, np, nb):
    sent = handshake(PeerAuth(secret, role, np), BrokerAuth({role: secret}, nb))
    assert [m.type for m in sent] == ["hello", "challenge", "auth", "welcome"]


def test_the_secret_never_crosses_the_wire():
    secret = new_nonce()  # 32 random bytes, unlikely to turn up by chance
    sent = handshake(PeerAuth(secret, ROLE_WORKER, new_nonce()), BrokerAuth({ROLE_WORKER: secret}, new_nonce()))
    on_the_wire = b"".join(encode(m) for m in sent)
    assert secret not in on_the_wire and secret[:8] not in on_the_wire


@FAST
@given(secrets_, secrets_, roles, nonces, nonces)
def test_a_wrong_secret_fails_at_the_broker(secret, other, role, np, nb):
    # Any other secret, even one that differs only by a trailing zero byte,
    # which plain HMAC keys would treat as the same key.
    if secret == other:
        return
    with pytest.raises(AuthFailed, match="wrong proof"):
        handshake(PeerAuth(other, role, np), BrokerAuth({role: secret}, nb))


@FAST
@given(secrets_, roles, nonces, nonces, nonces)
def test_a_recorded_handshake_replayed_fails(secret, role, np, nb1, nb2):
    if nb1 == nb2:
        return
    recorded = handshake(PeerAuth(secret, role, np), BrokerAuth({role: secret}, nb1))
    # The attacker sends the recorded hello and auth again; the broker's
    # fresh nonce makes the recorded proof worthless.
    broker = BrokerAuth({role: secret}, nb2)
    assert broker.challenge(recorded[0]) is not None  # type: ignore[arg-type]
    with pytest.raises(AuthFailed):
        broker.verify(recorded[2])  # type: ignore[arg-type]


@FAST
@given(secrets_, roles, nonces, nonces)
def test_a_reflected_proof_fails_both_ways(secret, role, np, nb):
    broker_proof = make_proof(secret, BROKER, role, np, nb)
    peer_proof = make_proof(secret, PEER, role, np, nb)
    assert broker_proof != peer_proof
    # The broker's own proof handed back to it as a peer's answer.
    broker = BrokerAuth({role: secret}, nb)
    broker.challenge(PeerAuth(secret, role, np).hello(hello(role)))
    with pytest.raises(AuthFailed):
        broker.verify(Auth(broker_proof))
    # A fake broker echoing the peer's own proof back in its welcome.
    peer = PeerAuth(secret, role, np)
    peer.answer(Challenge(nb))
    with pytest.raises(AuthFailed, match="broker's proof is wrong"):
        peer.check_welcome(welcome(peer_proof))


@FAST
@given(secrets_, nonces, nonces, st.integers(min_value=0, max_value=255), st.integers(min_value=0, max_value=7))
def test_any_changed_bit_of_a_proof_fails(secret, np, nb, index, bit):
    peer = PeerAuth(secret, ROLE_CLIENT, np)
    broker = BrokerAuth({ROLE_CLIENT: secret}, nb)
    broker.challenge(peer.hello(hello(ROLE_CLIENT)))
    proof = bytearray(peer.answer(Challenge(nb)).proof)
    proof[index % len(proof)] ^= 1 << bit
    with pytest.raises(AuthFailed):
        broker.verify(Auth(bytes(proof)))
    with pytest.raises(AuthFailed):
        broker.verify(Auth(bytes(proof[:-1])))  # a short proof too


@FAST
@given(secrets_, nonces, nonces)
def test_a_proof_for_one_role_admits_no_other(secret, np, nb):
    # Same secret for both roles: a client's proof still cannot admit a worker.
    client_proof = make_proof(secret, PEER, ROLE_CLIENT, np, nb)
    broker = BrokerAuth({ROLE_CLIENT: secret, ROLE_WORKER: secret}, nb)
    broker.challenge(PeerAuth(secret, ROLE_WORKER, np).hello(hello(ROLE_WORKER)))
    with pytest.raises(AuthFailed, match="worker secret"):
        broker.verify(Auth(client_proof))


@FAST
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=400))
def test_any_bytes_after_a_handshake_frame_give_messages_or_protocol_error(garbage, cut):
    """Handshake frames cut anywhere and followed by anything: the Decoder
    yields messages or raises ProtocolError, never anything else."""
    np, nb = new_nonce(), new_nonce()
    stream = b"".join(
        encode(m)
        for m in [
            Hello(PROTOCOL_VERSION, ROLE_WORKER, tasks=["square"], processes=2, nonce=np),
            Challenge(nb),
            Auth(make_proof(b"k" * 16, PEER, ROLE_WORKER, np, nb)),
            welcome(b"p" * 32),
        ]
    )
    data = stream[: cut % (len(stream) + 1)] + garbage
    dec = Decoder(max_frame_bytes=1 << 16)
    dec.feed(data)
    dec.feed(b"")
    try:
        while dec.next_message() is not None:
            pass
    except ProtocolError:
        pass


@FAST
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=255))
def test_a_mangled_auth_frame_is_a_protocol_error_or_a_failed_proof(position, value):
    secret, np, nb = b"s" * 16, new_nonce(), new_nonce()
    broker = BrokerAuth({ROLE_CLIENT: secret}, nb)
    broker.challenge(Hello(PROTOCOL_VERSION, ROLE_CLIENT, nonce=np))
    good = encode(PeerAuth(secret, ROLE_CLIENT, np).answer(Challenge(nb)))
    mangled = bytearray(good)
    mangled[4 + position % (len(good) - 4)] = value
    try:
        msg = decode(bytes(mangled[4:]))
    except ProtocolError:
        return
    if not isinstance(msg, Auth):
        return  # it decoded as some other message: the broker rejects that as out of order
    if bytes(mangled) == good:
        broker.verify(msg)
    else:
        with pytest.raises(AuthFailed):
            broker.verify(msg)


# -- the edges, one by one -------------------------------------------------------


def test_separate_worker_secret_keeps_clients_out_of_the_worker_role():
    client_secret, worker_secret = b"c" * 32, b"w" * 32
    keys = {ROLE_CLIENT: client_secret, ROLE_WORKER: worker_secret}
    handshake(PeerAuth(client_secret, ROLE_CLIENT, new_nonce()), BrokerAuth(keys, new_nonce()))
    handshake(PeerAuth(worker_secret, ROLE_WORKER, new_nonce()), BrokerAuth(keys, new_nonce()))
    with pytest.raises(AuthFailed, match="worker secret"):
        handshake(PeerAuth(client_secret, ROLE_WORKER, new_nonce()), BrokerAuth(keys, new_nonce()))


def test_a_hello_without_credentials_fails_when_the_role_needs_a_secret():
    broker = BrokerAuth({ROLE_CLIENT: b"s" * 16, ROLE_WORKER: None}, new_nonce())
    with pytest.raises(AuthFailed, match="no credentials"):
        broker.challenge(hello(ROLE_CLIENT))
    with pytest.raises(AuthFailed, match="malformed nonce"):
        broker.challenge(Hello(PROTOCOL_VERSION, ROLE_CLIENT, nonce=b"short"))
    # An open role is not challenged at all.
    assert broker.challenge(hello(ROLE_WORKER)) is None


def test_the_peer_refuses_a_broker_that_does_not_prove_itself():
    peer = PeerAuth(b"s" * 16, ROLE_CLIENT, new_nonce())
    with pytest.raises(AuthFailed, match="asked for no secret"):
        peer.check_welcome(welcome())  # a welcome with no challenge first
    peer.answer(Challenge(new_nonce()))
    with pytest.raises(AuthFailed, match="proof is wrong"):
        peer.check_welcome(welcome())  # a challenge, then a welcome without proof
    with pytest.raises(AuthFailed, match="malformed nonce"):
        PeerAuth(b"s" * 16, ROLE_CLIENT, new_nonce()).answer(Challenge(b"x" * 5))


def test_verify_before_a_challenge_fails():
    with pytest.raises(AuthFailed):
        BrokerAuth({ROLE_CLIENT: b"s" * 16}, new_nonce()).verify(Auth(b"\0" * 32))


def test_nonces_are_fresh_and_the_right_length():
    seen = {new_nonce() for _ in range(100)}
    assert len(seen) == 100 and all(len(n) == NONCE_BYTES for n in seen)
    with pytest.raises(ValueError):
        PeerAuth(b"s", ROLE_CLIENT, b"short")
    with pytest.raises(ValueError):
        BrokerAuth({}, b"short")


@pytest.mark.parametrize(
    "wire_map",
    [
        {"type": "challenge"},
        {"type": "challenge", "nonce": "text, not bytes"},
        {"type": "auth", "proof": 7},
        {"type": "hello", "version": 1, "role": "client", "nonce": ["x"]},
        {"type": "welcome", "version": 1, "broker": "b", "max_frame_bytes": 10, "proof": "p"},
    ],
)
def test_handshake_fields_of_the_wrong_type_are_protocol_errors(wire_map):
    from sockpool.protocol import pack_body

    with pytest.raises(ProtocolError):
        decode(pack_body(wire_map))


def test_handshake_messages_round_trip_with_their_new_fields():
    for msg in [
        Hello(PROTOCOL_VERSION, ROLE_CLIENT, session="s", nonce=b"\x01" * 32),
        Challenge(b"\x02" * 32),
        Auth(b"\x03" * 32),
        Welcome(PROTOCOL_VERSION, "b", 1024, proof=b"\x04" * 32),
    ]:
        assert wire(msg) == msg
    # An older peer's hello, without a nonce, still decodes.
    assert wire(Hello(PROTOCOL_VERSION, ROLE_CLIENT)).nonce == b""  # type: ignore[attr-defined]


# -- telling TLS from sockpool at the first bytes --------------------------------


def client_hello() -> bytes:
    """The first bytes a real TLS client sends."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_tls_client_hello_is_recognised_and_sockpool_frames_are_not():
    hello_bytes = client_hello()
    assert looks_like_tls(hello_bytes) and looks_like_tls(hello_bytes[:1])
    assert looks_like_tls(bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]))  # an alert
    assert not looks_like_tls(encode(Hello(PROTOCOL_VERSION, ROLE_CLIENT, nonce=new_nonce())))
    assert not looks_like_tls(b"")
    assert not looks_like_tls(b"\x16\x00")


def test_a_tls_client_hello_fed_to_a_sockpool_decoder_is_refused_before_buffering():
    dec = Decoder(max_frame_bytes=1 << 20)
    dec.feed(client_hello())
    with pytest.raises(FrameTooLarge):
        dec.next_message()
    assert looks_like_tls(dec.peek(2))  # what the broker and client look at to say why


def test_secrets_that_plain_hmac_would_confuse_are_distinct_keys():
    np, nb = new_nonce(), new_nonce()
    long_secret = b"x" * 100  # over HMAC's block size: HMAC would hash it
    import hashlib

    pairs = [(b"k" * 16, b"k" * 16 + b"\0"), (long_secret, hashlib.sha256(long_secret).digest())]
    for a, b in pairs:
        assert make_proof(a, PEER, ROLE_CLIENT, np, nb) != make_proof(b, PEER, ROLE_CLIENT, np, nb)
