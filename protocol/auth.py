"""Mutual authentication by a shared secret: challenge and response, no I/O.

When the broker has a secret for the role a peer claims, the handshake is

    peer -> broker   hello     {..., nonce: Np}        Np: 32 fresh random bytes
    broker -> peer   challenge {nonce: Nb}             Nb: 32 fresh random bytes
    peer -> broker   auth      {proof: MAC(K, "peer", role, Np, Nb)}
    broker -> peer   welcome   {..., proof: MAC(K, "broker", role, Np, Nb)}
                  or error     {code: "auth_failed", message: "authentication failed"}, close

and the peer checks the welcome's proof before it sends anything else.
With no secret for that role the broker answers the hello with a welcome
at once, as before. MAC is HMAC-SHA256 keyed with SHA-256 of the secret K.

Why each piece is there:
1. The secret never crosses the wire, only MACs over fresh nonces.
2. The broker's nonce makes a recorded peer proof worthless on any other
   connection (replay); the peer's nonce does the same for a recorded
   broker proof shown by a fake broker.
3. The direction label means a proof the broker made can never pass as a
   peer's proof (reflection: open two connections, hand the broker's own
   answer back to it). The role means a proof for one role admits no other.
4. The peer proves first. The broker reveals a MAC only to a peer that has
   shown it knows the secret, so a stranger gets nothing to guess the
   secret against offline.
5. Proofs are compared with `hmac.compare_digest`, in constant time.

This authenticates the handshake only. Without TLS, whoever sits on the
path can read and alter what follows; see SECURITY.md.

Nothing here touches a socket or a clock. `new_nonce` reads the operating
system's randomness; the classes take their nonce as an argument so tests
can pass their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from typing import Mapping

from .errors import AuthFailed
from .messages import ROLES, Auth, Challenge, Hello, Welcome

NONCE_BYTES = 32
_LABEL = b"sockpool-auth-1"
PEER = "peer"
BROKER = "broker"


def new_nonce() -> bytes:
    """Fresh random bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(NONCE_BYTES)


def make_proof(secret: bytes, direction: str, role: str, peer_nonce: bytes, broker_nonce: bytes) -> bytes:
    """MAC(secret, direction, role, both nonces).

    The fields are separated by NUL and the nonces have a fixed length, so
    no two different inputs produce the same MAC input.
    """
    if direction not in (PEER, BROKER) or role not in ROLES:
        raise ValueError(f"bad direction {direction!r} or role {role!r}")
    if len(peer_nonce) != NONCE_BYTES or len(broker_nonce) != NONCE_BYTES:
        raise ValueError("nonces must be NONCE_BYTES long")
    data = b"\0".join([_LABEL, direction.encode(), role.encode(), peer_nonce + broker_nonce])
    return hmac.new(_key(secret), data, hashlib.sha256).digest()


def _key(secret: bytes) -> bytes:
    """The HMAC key for a secret: a fixed-length hash of it.

    HMAC itself pads short keys with zero bytes and hashes long ones, so
    b"k" and b"k\0", or a long secret and its hash, would be one key. Hashing
    first gives every distinct secret its own key.
    """
    return hashlib.sha256(_LABEL + b"\0key\0" + secret).digest()


def proof_matches(expected: bytes, given: bytes) -> bool:
    """Constant-time comparison: timing reveals nothing about `expected`."""
    return hmac.compare_digest(expected, given)


class BrokerAuth:
    """The broker's side of the handshake, for one connection.

        auth = BrokerAuth(keys, new_nonce())
        challenge = auth.challenge(hello)      # None: this role needs no secret
        ... send challenge, receive an Auth ...
        proof = auth.verify(auth_msg)          # goes into the welcome
    """

    def __init__(self, keys: Mapping[str, bytes | None], nonce: bytes) -> None:
        """`keys` maps a role to its secret, or to None if that role is open."""
        if len(nonce) != NONCE_BYTES:
            raise ValueError("nonce must be NONCE_BYTES long")
        self._keys = keys
        self.nonce = nonce
        self._key: bytes | None = None
        self._role = ""
        self._peer_nonce = b""

    def challenge(self, hello: Hello) -> Challenge | None:
        """The challenge for this hello, or None if its role needs no secret.

        Call only with a hello `check_hello` accepted.

        Raises:
            AuthFailed: the role needs a secret and the hello has no valid nonce.
        """
        key = self._keys.get(hello.role)
        if key is None:
            return None
        if not hello.nonce:
            raise AuthFailed(f"the {hello.role} sent no credentials (it has no secret)")
        if len(hello.nonce) != NONCE_BYTES:
            raise AuthFailed(f"malformed nonce of {len(hello.nonce)} bytes")
        self._key, self._role, self._peer_nonce = key, hello.role, hello.nonce
        return Challenge(self.nonce)

    def verify(self, auth: Auth) -> bytes:
        """Check the peer's proof; returns the broker's proof for the welcome.

        Raises:
            AuthFailed: the proof is wrong (a wrong secret, or a replay).
        """
        if self._key is None:
            raise AuthFailed("auth before a challenge")
        expected = make_proof(self._key, PEER, self._role, self._peer_nonce, self.nonce)
        if not proof_matches(expected, auth.proof):
            raise AuthFailed(f"wrong proof: not the {self._role} secret, or a replayed handshake")
        return make_proof(self._key, BROKER, self._role, self._peer_nonce, self.nonce)


class PeerAuth:
    """A worker's or client's side of the handshake, for one connection.

        auth = PeerAuth(secret, role, new_nonce())
        send(auth.hello(hello))
        send(auth.answer(challenge))
        auth.check_welcome(welcome)
    """

    def __init__(self, secret: bytes, role: str, nonce: bytes) -> None:
        if len(nonce) != NONCE_BYTES:
            raise ValueError("nonce must be NONCE_BYTES long")
        self._secret = secret
        self.role = role
        self.nonce = nonce
        self._broker_nonce = b""

    def hello(self, hello: Hello) -> Hello:
        """The hello to send: `hello` with our nonce."""
        return dataclasses.replace(hello, nonce=self.nonce)

    def answer(self, challenge: Challenge) -> Auth:
        """Our proof for the broker's challenge.

        Raises:
            AuthFailed: the challenge is malformed.
        """
        if len(challenge.nonce) != NONCE_BYTES:
            raise AuthFailed(f"the broker sent a malformed nonce of {len(challenge.nonce)} bytes")
        self._broker_nonce = challenge.nonce
        return Auth(make_proof(self._secret, PEER, self.role, self.nonce, challenge.nonce))

    def check_welcome(self, welcome: Welcome) -> None:
        """Make sure the broker proved it knows the secret too.

        Raises:
            AuthFailed: it did not: it sent no challenge (it has no secret,
                or it is not our broker) or a wrong proof.
        """
        if not self._broker_nonce:
            raise AuthFailed(
                "the broker asked for no secret, so it cannot prove it is ours "
                "(is it started without --secret-file?)"
            )
        expected = make_proof(self._secret, BROKER, self.role, self.nonce, self._broker_nonce)
        if not proof_matches(expected, welcome.proof):
            raise AuthFailed("the broker's proof is wrong: it does not know our secret")
