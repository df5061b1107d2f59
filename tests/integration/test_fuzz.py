"""Garbage and idleness thrown at a running broker.

Hundreds of connections that never say a word, and hundreds more that
send random bytes, random msgpack, wrong and unknown messages, valid
messages out of order, and valid frames with bytes flipped, cut or
inserted, some after a proper hello; and the outside review's attacks
(issue #10): out-of-range integers, float32 arrays, deep nesting, huge
hello fields, non-string error types, and, against a broker with secrets,
strangers that never answer the challenge. Afterwards the broker still serves a
normal `submit`, every bad connection was closed for a logged reason
rather than by an unexpected exception, and its memory stayed bounded.

Bounded counts, a fixed seed (so a failure replays), a timeout on every
socket: the whole test takes seconds.
"""

from __future__ import annotations

import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgpack

from sockpool.protocol import (
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    ROLE_WORKER,
    Accepted,
    Ack,
    Auth,
    Challenge,
    Credit,
    Drain,
    Error,
    FailedJobs,
    Hello,
    Jobs,
    ListFailed,
    Message,
    Ping,
    Pong,
    Release,
    Results,
    Submit,
    Welcome,
    encode,
    frame,
)

from .cluster import run_submit, start_broker, start_worker, wait_for_processes

SEED = 4_2023_48022  # after the Ray CVE that an open port turned into RCE
IDLE_CONNECTIONS = 300
GARBAGE_CONNECTIONS = 400
SOCKET_TIMEOUT_S = 5.0
# Generous: this is a bound on growth, to catch unbounded buffering, not a
# measure of efficiency.
MAX_RSS_GROWTH_BYTES = 50 * 1024 * 1024

TAGS = ["hello", "welcome", "error", "submit", "accepted", "jobs", "results", "credit", "ping", "pong",
        "challenge", "auth", "ack", "release", "drain", "list_failed", "failed_jobs", "nonsense", ""]


def samples() -> list[Message]:
    """Valid messages of every kind, to send out of order and to mutate."""
    job = [1, "square", [3], {}, False]
    return [
        Hello(PROTOCOL_VERSION, ROLE_CLIENT, name="fuzz", session="s"),
        Hello(PROTOCOL_VERSION, ROLE_WORKER, name="fuzz", tasks=["square", "echo"], processes=2),
        Hello(PROTOCOL_VERSION + 7, ROLE_CLIENT),
        Hello(PROTOCOL_VERSION, "admin"),
        Welcome(PROTOCOL_VERSION, "b", 1024),
        Error("bad", "worse"),
        Submit(1, [job, [2, "echo", ["x" * 100], {"k": None}, False], [3, "square", [1, 2], {}, True]]),
        Submit(2**63 - 1, [[-(2**63), "", [], {}, False]]),
        Accepted(1, 1),
        Jobs([job]),
        Results([[1, True, 9], [2, False, {"type": "E", "message": "m"}]], credit=3),
        Results([[999_999, True, None]], credit=2**62),
        Credit(5),
        Credit(-1),
        Ping(),
        Pong(),
        Challenge(b"\0" * 32),
        Auth(b"\0" * 32),
        Ack(ids=[1, 2]),
        Release([1]),
        Drain(),
        ListFailed(),
        FailedJobs([]),
    ]


def raw(wire: object, **pack: bool) -> bytes:
    return frame(msgpack.packb(wire, use_bin_type=True, **pack))


def review_attacks() -> list[bytes]:
    """What the outside review (issue #10) sent, as frames to send and mutate."""
    hello = {"type": "hello", "version": PROTOCOL_VERSION}
    deep = b"\x91" * 600 + b"\x01"
    return [
        # Out-of-range integers, everywhere one can go.
        raw({"type": "submit", "batch": 1, "jobs": [[2**63, "square", [1], {}, False]]}),
        raw({"type": "submit", "batch": 2**64 - 1, "jobs": [[1, "square", [1], {}, False]]}),
        raw({"type": "submit", "batch": 1, "jobs": [[1, "square", [1], {}, False, {"timeout": float("inf")}]]}),
        raw({"type": "ack", "ids": [2**64 - 1]}),
        raw({"type": "credit", "credit": 2**63}),
        raw({**hello, "role": "worker", "tasks": ["square"], "processes": 2**64 - 2}),
        # float32 arrays, which grow by 80% when the broker passes them on.
        raw({"type": "submit", "batch": 3, "jobs": [[1, "echo", [0.5] * 50_000, {}, False]]}, use_single_float=True),
        # Deep nesting, in arguments and in a result.
        frame(b"\x83\xa4type\xa6submit\xa5batch\x04\xa4jobs\x91\x95\x01\xa4echo\x91" + deep + b"\x80\xc2"),
        frame(b"\x82\xa4type\xa7results\xa7results\x91\x93\x01\xc3" + deep),
        # Huge hello fields.
        raw({**hello, "role": "client", "name": "n" * 3000}),
        raw({**hello, "role": "client", "session": "s" * 3000}),
        raw({**hello, "role": "worker", "processes": 1, "tasks": ["ab"] * 350_000}),
        raw({**hello, "role": "worker", "processes": 1, "tasks": ["t" * 5000]}),
        # Non-string error types, from a worker.
        raw({"type": "results", "results": [[1, False, {"type": [1], "message": "m"}]], "credit": 1}),
        raw({"type": "results", "results": [[1, False, "not a map"]]}),
        # A packed array whose 5-byte header claims 4 billion items; empty maps by the million.
        raw({"type": "submit", "batch": 5, "jobs": [[1, "square", msgpack.ExtType(1, b"\xdd\xff\xff\xff\xff"), {}, True]]}),
        raw({"type": "submit", "batch": 6, "jobs": [[1, "echo", [{}] * 200_000, {}, False]]}),
        # A newline in a name, to forge a log line.
        raw({**hello, "role": "client", "name": "x\n2026-01-01 00:00:00 INFO forged"}),
    ]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(5)
        at = rng.randrange(len(buf) + 1)
        if choice == 0 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif choice == 1:
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        elif choice == 2:
            del buf[at : at + rng.randint(1, 16)]
        elif choice == 3:
            del buf[at:]
        else:
            buf += buf[at:]
    return bytes(buf)


def random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, float("inf")])
    if kind == 2:
        return rng.choice(["", "x", "é" * 3, "type", "jobs"] + TAGS)
    if kind == 3:
        return rng.randbytes(rng.randint(0, 40))
    if kind == 4:
        return msgpack.ExtType(rng.randint(0, 127), rng.randbytes(rng.randint(0, 8)))
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == 6:
        return {rng.choice(["type", "jobs", "results", "credit", "version", "role", "ids", "x"]): random_value(rng, depth + 1)
                for _ in range(rng.randint(0, 4))}
    return {"type": rng.choice(TAGS), **{k: random_value(rng, depth + 1) for k in rng.sample(
        ["version", "role", "jobs", "results", "credit", "batch", "ids", "tasks", "processes", "nonce", "proof",
         "code", "message", "session", "all", "running"], rng.randint(0, 5))}}


def garbage(rng: random.Random, valid: list[bytes]) -> bytes:
    """One connection's worth of bytes that a broker must survive."""
    kind = rng.randrange(10)
    if kind == 0:
        body = rng.randbytes(rng.randint(0, 2000))
    elif kind == 1:
        body = frame(rng.randbytes(rng.randint(0, 300)))
    elif kind == 2:
        body = frame(msgpack.packb(random_value(rng), use_bin_type=True))
    elif kind == 3:
        body = rng.choice(
            [
                b"\xff\xff\xff\xff" + rng.randbytes(100),  # a 4 GiB frame, announced
                frame(b"\x91" * 100_000 + b"\xc0"),  # nesting deeper than any stack
                frame(b"\xdd\xff\xff\xff\xff"),  # an array of 4 billion items, in 5 bytes
                frame(b"\xdb\xff\xff\xff\xff"),  # a 4 GiB string, in 5 bytes
                frame(b"\xdf\xff\xff\xff\xff"),  # a 4 billion entry map
                frame(msgpack.packb({1: 2})),  # a non-string key
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(200),  # a TLS ClientHello
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                b"\x00\x00\x00",  # a truncated prefix
            ]
        )
    elif kind in (4, 5):
        body = rng.choice(valid[:2]) + b"".join(rng.choice(valid) for _ in range(rng.randint(1, 4)))
    else:
        body = b"".join(mutate(rng.choice(valid), rng) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.5:
        body = rng.choice(valid[:2]) + body  # past the handshake first
    return body


def throw(address: tuple[str, int], data: bytes) -> None:
    """Send `data`, end our side, read until the broker closes (or give up)."""
    try:
        with socket.create_connection(address, timeout=SOCKET_TIMEOUT_S) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the broker closed on us mid-send: fine
            while sock.recv(65536):
                pass
    except OSError:
        pass  # reset or timeout: the broker owes a stranger no orderly goodbye


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc")


def test_garbage_and_idle_connections_leave_the_broker_serving_in_bounded_memory(tmp_path):
    # Idle connections must last the whole test, so the handshake deadline is long.
    broker, address = start_broker(tmp_path, "--handshake-timeout-s", "120", "--log-level", "info")
    worker = start_worker(tmp_path, address, 1)
    host, port = address.rsplit(":", 1)
    target = (host, int(port))
    idle: list[socket.socket] = []
    try:
        wait_for_processes(address, 1)
        done = run_submit("--broker", address, "square", "2")
        assert done.returncode == 0, done.stderr
        before = rss_bytes(broker.popen.pid)

        idle = [socket.create_connection(target, timeout=SOCKET_TIMEOUT_S) for _ in range(IDLE_CONNECTIONS)]

        rng = random.Random(SEED)
        valid = [encode(m) for m in samples()] + review_attacks()
        payloads = [garbage(rng, valid) for _ in range(GARBAGE_CONNECTIONS)]
        # Each of the review's attacks as it was sent, after a client's and a worker's hello.
        payloads += [valid[i] + attack for attack in review_attacks() for i in (0, 1)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda data: throw(target, data), payloads))

        # With every idle connection still open, a normal submit is served.
        done = run_submit("--broker", address, "square", "3", "4")
        assert done.returncode == 0, done.stderr + broker.log()[-3000:]
        assert done.stdout.split() == ["9", "16"]
        during = rss_bytes(broker.popen.pid)

        for sock in idle:
            sock.close()
        idle = []
        done = run_submit("--broker", address, "echo", "still here")
        assert done.returncode == 0 and done.stdout.strip() == "still here"
        after = rss_bytes(broker.popen.pid)

        assert broker.popen.poll() is None
        assert worker.popen.poll() is None
        log = broker.log()
        # Every bad connection ended on a reason the broker knew to give.
        assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
        assert "protocol error" in log and "exceeds the limit" in log
        assert "TLS handshake on a plaintext port" in log
        assert during - before < 2 * MAX_RSS_GROWTH_BYTES, (before, during)
        assert after - before < MAX_RSS_GROWTH_BYTES, (before, after)
    finally:
        for sock in idle:
            sock.close()
        worker.stop()
        broker.stop()


def test_with_a_secret_strangers_that_never_answer_and_insiders_with_the_reviews_attacks(tmp_path):
    """A broker with client and worker secrets: strangers that send a full
    hello and never answer the challenge, and peers holding the secret that
    send the review's attacks once admitted. Afterwards the broker serves,
    in bounded memory, with no unexpected exception."""
    import secrets as secrets_module

    from sockpool.net.connection import connect, new_hello
    from sockpool.net.credentials import Credentials

    paths = {}
    for role in ("client", "worker"):
        path = tmp_path / f"{role}.secret"
        path.write_text(secrets_module.token_hex(32))
        path.chmod(0o600)
        paths[role] = str(path)
    broker, address = start_broker(tmp_path, "--handshake-timeout-s", "60", "--secret-file", paths["client"],
                                   "--worker-secret-file", paths["worker"], "--log-level", "info")
    worker = start_worker(tmp_path, address, 1, "--secret-file", paths["worker"])
    host, port = address.rsplit(":", 1)
    target = (host, int(port))
    strangers: list[socket.socket] = []
    try:
        wait_for_processes(address, 1, secret_file=paths["client"])
        before = rss_bytes(broker.popen.pid)
        hello = raw({"type": "hello", "version": PROTOCOL_VERSION, "role": "worker", "processes": 1,
                     "nonce": b"n" * 32, "tasks": ["ab"] * 1300})
        for _ in range(100):
            sock = socket.create_connection(target, timeout=SOCKET_TIMEOUT_S)
            sock.sendall(hello)
            strangers.append(sock)
        for sock in strangers:
            assert sock.recv(4)  # the challenge, which none of them answers
        rng = random.Random(SEED)
        attacks = review_attacks()
        for index, attack in enumerate(attacks + [mutate(rng.choice(attacks), rng) for _ in range(40)]):
            role = "worker" if index % 2 else "client"
            fields = {"processes": 1, "tasks": ["square"]} if role == "worker" else {}
            credentials = Credentials(secret=open(paths[role], "rb").read().strip())
            conn, _ = connect(address, new_hello(role, name="insider", **fields), SOCKET_TIMEOUT_S, credentials)
            try:
                conn.send_bytes(attack)
                conn.sock.shutdown(socket.SHUT_WR)
                while True:
                    conn.recv(time.monotonic() + SOCKET_TIMEOUT_S)
            except Exception:
                pass  # closed on us, or it had nothing to say: either is fine
            finally:
                conn.close()
        done = run_submit("--broker", address, "--secret-file", paths["client"], "square", "3", "4")
        assert done.returncode == 0, done.stderr + broker.log()[-3000:]
        assert done.stdout.split() == ["9", "16"]
        during = rss_bytes(broker.popen.pid)
        assert broker.popen.poll() is None and worker.popen.poll() is None
        log = broker.log()
        assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
        assert during - before < MAX_RSS_GROWTH_BYTES, (before, during)
    finally:
        for sock in strangers:
            sock.close()
        worker.stop()
        broker.stop()
