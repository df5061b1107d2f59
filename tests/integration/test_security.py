"""Closed to strangers: secrets, TLS, limits and refused tasks, on real processes.

Each test starts its own broker with the options under test and talks to
it through the front doors (`submit`, `worker join`, Client) or, for what
those would never send, through a raw Connection on loopback.
"""

from __future__ import annotations

import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sockpool.client import Client
from sockpool.net.connection import Connection
from sockpool.protocol import (
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    Challenge,
    ConnectionLost,
    Error,
    HandshakeRefused,
    Hello,
    Ping,
    Submit,
    Welcome,
    encode,
)
from sockpool.protocol.auth import PeerAuth, new_nonce

from .cluster import Proc, run_submit, start_broker, start_worker, wait_for_processes

WAIT_S = 30


def write_secret(path: Path) -> str:
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)  # a secret others can read is refused
    return str(path)


def wait_for_exit(proc: Proc) -> int:
    code = proc.popen.wait(WAIT_S)
    proc.stop()
    return code


def wait_for_log(proc: Proc, text: str) -> str:
    """The process's log once it contains `text` (the broker logs after it answers)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        log = proc.log()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log:\n{proc.log()}")


def raw_connection(address: str) -> Connection:
    host, port = address.rsplit(":", 1)
    conn = Connection(socket.create_connection((host, int(port)), timeout=WAIT_S))
    conn.settimeout(WAIT_S)
    return conn


@pytest.fixture
def secret_broker(tmp_path):
    secret = write_secret(tmp_path / "secret")
    broker, address = start_broker(tmp_path, "--secret-file", secret)
    try:
        yield broker, address, secret
    finally:
        broker.stop()


# -- authentication ------------------------------------------------------------


def test_only_peers_with_the_secret_get_in(secret_broker, tmp_path):
    broker, address, secret = secret_broker
    wrong = write_secret(tmp_path / "wrong")
    worker = start_worker(tmp_path, address, 1, "--secret-file", secret, name="good")
    try:
        wait_for_processes(address, 1, secret_file=secret)

        done = run_submit("--broker", address, "--secret-file", secret, "square", "3", "4")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["9", "16"]
        # The environment variable does the same.
        done = run_submit("--broker", address, "square", "5", env={"SOCKPOOL_SECRET_FILE": secret})
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["25"]

        done = run_submit("--broker", address, "square", "3")
        assert done.returncode != 0 and done.stdout == ""
        assert "authentication failed" in done.stderr and "--secret-file" in done.stderr

        done = run_submit("--broker", address, "--secret-file", wrong, "square", "3")
        assert done.returncode != 0 and done.stdout == ""
        assert "authentication failed" in done.stderr

        with pytest.raises(HandshakeRefused) as refused:
            Client(address, secret_file=wrong)
        assert refused.value.code == "auth_failed"

        # A worker with the wrong secret exits with the reason instead of retrying.
        bad = start_worker(tmp_path, address, 1, "--secret-file", wrong, name="bad")
        assert wait_for_exit(bad) != 0
        assert "authentication failed" in bad.log()

        log = wait_for_log(broker, "authentication failed for worker")
        assert "authentication failed for client" in log and "no credentials" in log
        assert "127.0.0.1:" in log and "wrong proof" in log
        assert worker.popen.poll() is None  # the good worker is still serving
    finally:
        worker.stop()


def test_a_replayed_handshake_fails(secret_broker):
    broker, address, secret = secret_broker
    key = Path(secret).read_text().strip().encode()

    # A genuine handshake, every byte the peer sends recorded.
    auth = PeerAuth(key, ROLE_CLIENT, new_nonce())
    conn = raw_connection(address)
    recorded = encode(auth.hello(Hello(PROTOCOL_VERSION, ROLE_CLIENT, name="genuine")))
    conn.send_bytes(recorded)
    challenge = conn.recv()
    assert isinstance(challenge, Challenge)
    answer = encode(auth.answer(challenge))
    recorded += answer
    conn.send_bytes(answer)
    welcome = conn.recv()
    assert isinstance(welcome, Welcome)
    auth.check_welcome(welcome)  # the broker proved it knows the secret
    conn.close()

    # The same bytes again, as an eavesdropper would replay them.
    replay = raw_connection(address)
    replay.send_bytes(recorded)
    second = replay.recv()
    assert isinstance(second, Challenge) and second.nonce != challenge.nonce
    refusal = replay.recv()
    assert refusal == Error("auth_failed", "authentication failed")
    replay.close()
    assert "replayed" in wait_for_log(broker, "authentication failed for client 'genuine'")


def test_a_client_secret_cannot_join_as_a_worker(tmp_path):
    client_secret = write_secret(tmp_path / "client")
    worker_secret = write_secret(tmp_path / "worker")
    broker, address = start_broker(tmp_path, "--secret-file", client_secret, "--worker-secret-file", worker_secret)
    workers = []
    try:
        intruder = start_worker(tmp_path, address, 1, "--secret-file", client_secret, name="intruder")
        workers.append(intruder)
        assert wait_for_exit(intruder) != 0
        assert "authentication failed" in intruder.log()

        workers.append(start_worker(tmp_path, address, 1, "--secret-file", worker_secret, name="good"))
        wait_for_processes(address, 1, secret_file=client_secret)
        done = run_submit("--broker", address, "--secret-file", client_secret, "square", "6")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["36"]
        # Nor does the worker secret make a client.
        done = run_submit("--broker", address, "--secret-file", worker_secret, "square", "6")
        assert done.returncode != 0 and "authentication failed" in done.stderr
        assert "not the worker secret" in broker.log()
    finally:
        for proc in workers:
            proc.stop()
        broker.stop()


def test_a_peer_with_a_secret_refuses_a_broker_without_one(tmp_path):
    """Mutual authentication: a broker that cannot prove it knows the secret
    (here: one started without any) gets no worker and no jobs."""
    broker, address = start_broker(tmp_path)
    secret = write_secret(tmp_path / "secret")
    try:
        worker = start_worker(tmp_path, address, 1, "--secret-file", secret, name="careful")
        assert wait_for_exit(worker) != 0
        assert "asked for no secret" in worker.log()
        done = run_submit("--broker", address, "--secret-file", secret, "square", "2")
        assert done.returncode != 0 and "asked for no secret" in done.stderr
    finally:
        broker.stop()


# -- TLS -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    certs_module = pytest.importorskip("tests.certs", reason="needs the cryptography package (test extra)")
    base = tmp_path_factory.mktemp("certs")
    return certs_module.make_certs(base / "good"), certs_module.make_certs(base / "other", "some other CA")


def test_tls_with_a_secret_and_the_mismatches_fail_fast(tmp_path, certs):
    good, other = certs
    secret = write_secret(tmp_path / "secret")
    broker, address = start_broker(
        tmp_path, "--tls-cert", str(good.cert), "--tls-key", str(good.key), "--secret-file", secret
    )
    worker = start_worker(tmp_path, address, 1, "--secret-file", secret, "--tls-ca", str(good.ca), name="tls")
    try:
        wait_for_processes(address, 1, secret_file=secret, tls_ca=str(good.ca))
        done = run_submit("--broker", address, "--secret-file", secret, "--tls-ca", str(good.ca), "square", "7", "8")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["49", "64"]
        with Client(address, secret_file=secret, tls_ca=str(good.ca)) as client:
            # Big enough to take many TLS records each way.
            payload = "x" * 3_000_000
            assert client.submit("echo", payload).result(WAIT_S) == payload
            assert list(client.map("square", range(2000), timeout=WAIT_S)) == [x * x for x in range(2000)]

        # A plaintext peer on the TLS port is told what to do.
        done = run_submit("--broker", address, "--secret-file", secret, "square", "1")
        assert done.returncode != 0 and "speaks TLS" in done.stderr and "--tls-ca" in done.stderr
        plain_worker = start_worker(tmp_path, address, 1, "--secret-file", secret, name="plain")
        assert wait_for_exit(plain_worker) != 0
        assert "speaks TLS" in plain_worker.log()
        # A certificate from a CA we were not told to trust.
        done = run_submit("--broker", address, "--secret-file", secret, "--tls-ca", str(other.ca), "square", "1")
        assert done.returncode != 0 and "does not vouch" in done.stderr
        # Garbage on the TLS port: a broken ClientHello, random bytes, silence.
        host, port = address.rsplit(":", 1)
        for junk in [b"\x16\x03\x01\x00\x05hello" + secrets.token_bytes(300), secrets.token_bytes(500), b""]:
            with socket.create_connection((host, int(port)), timeout=WAIT_S) as sock:
                sock.sendall(junk)
                sock.shutdown(socket.SHUT_WR)
                try:
                    while sock.recv(4096):
                        pass
                except OSError:
                    pass
        done = run_submit("--broker", address, "--secret-file", secret, "--tls-ca", str(good.ca), "square", "9")
        assert done.returncode == 0 and done.stdout.split() == ["81"]
        log = wait_for_log(broker, "plaintext peer on a TLS port")
        assert "TLS handshake failed" in log and "Traceback" not in log
    finally:
        worker.stop()
        broker.stop()

    # The reverse: a TLS peer on a plaintext broker.
    (tmp_path / "plain").mkdir()
    plain, plain_address = start_broker(tmp_path / "plain")
    try:
        done = run_submit("--broker", plain_address, "--tls-ca", str(good.ca), "square", "1")
        assert done.returncode != 0
        assert "TLS handshake" in done.stderr and "--tls-cert" in done.stderr
        wait_for_log(plain, "TLS handshake on a plaintext port")
    finally:
        plain.stop()


# -- tasks that must never run -----------------------------------------------------


def test_standard_library_task_modules_are_refused(tmp_path):
    broker, address = start_broker(tmp_path)
    try:
        for module in ["os", "subprocess", "builtins"]:
            worker = start_worker(tmp_path, address, 1, "--tasks", module, name=module)
            assert wait_for_exit(worker) != 0
            assert "standard-library" in worker.log() and repr(module) in worker.log()
    finally:
        broker.stop()
    done = run_submit("--local", "--processes", "1", "--tasks", "subprocess", "subprocess:run", '["true"]')
    assert done.returncode != 0 and "standard-library" in done.stderr


def test_os_system_and_friends_run_nothing(cluster, tmp_path):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    attempts = [
        ("os:system", command),
        ("subprocess:run", f'["sh", "-c", "{command}"]'),
        ("builtins:eval", f"__import__('os').system('{command}')"),
        ("builtins:exec", f"import os; os.system('{command}')"),
        ("tests.tasks:os.system", command),
        ("posix:system", command),
    ]
    # All at once: each waits out the broker's grace for a task nobody serves.
    with ThreadPoolExecutor(len(attempts)) as pool:
        runs = list(pool.map(lambda attempt: run_submit("--broker", cluster.address, *attempt), attempts))
    for (task, _), done in zip(attempts, runs):
        assert done.returncode != 0, task
        assert "UnknownTask" in done.stderr, task
    assert not marker.exists()
    # The worker is fine and still serves what it should.
    done = run_submit("--broker", cluster.address, "tests.tasks:greet", "ada")
    assert done.returncode == 0 and done.stdout.split() == ["hello", "ada"]


# -- limits ---------------------------------------------------------------------------


def test_oversized_input_gets_a_clear_error_and_the_broker_stays_up(tmp_path):
    broker, address = start_broker(tmp_path, "--max-frame-bytes", "4096")
    worker = start_worker(tmp_path, address, 1)
    try:
        wait_for_processes(address, 1)
        done = run_submit("--broker", address, "echo", "small", "y" * 10_000)
        assert done.returncode != 0
        assert done.stdout.split()[0] == "small"
        assert "ArgumentsTooLarge" in done.stderr and "4096" in done.stderr

        # A peer that sends an oversized frame anyway is told why and closed,
        # before the broker buffers any of it.
        conn = raw_connection(address)
        conn.send(Hello(PROTOCOL_VERSION, ROLE_CLIENT))
        assert isinstance(conn.recv(), Welcome)
        conn.send_bytes(encode(Submit(1, [[1, "echo", ["z" * 100_000], {}, False]]))[:8192])
        reply = conn.recv()
        assert isinstance(reply, Error) and reply.code == "frame_too_large"
        conn.close()
        assert "exceeds the limit of 4096" in wait_for_log(broker, "exceeds the limit")

        done = run_submit("--broker", address, "square", "9")
        assert done.returncode == 0 and done.stdout.split() == ["81"]
    finally:
        worker.stop()
        broker.stop()


def test_connections_are_bounded_and_handshakes_have_a_deadline(tmp_path):
    broker, address = start_broker(tmp_path, "--max-connections", "20", "--handshake-timeout-s", "1")
    host, port = address.rsplit(":", 1)
    socks = []
    try:
        socks = [socket.create_connection((host, int(port)), timeout=WAIT_S) for _ in range(30)]
        # Beyond the limit, connections are closed at once; the rest are cut
        # off when their handshake deadline passes. Either way every one of
        # them ends without our doing anything.
        for s in socks:
            assert s.recv(1) == b""
        log = wait_for_log(broker, "at the limit of 20 connections")
        assert "sent nothing within" in log

        # A hello trickled in a byte at a time is cut off at the deadline too,
        # although it never stops sending.
        slow = socket.create_connection((host, int(port)), timeout=WAIT_S)
        socks.append(slow)
        data = encode(Hello(PROTOCOL_VERSION, ROLE_CLIENT, name="slowloris"))
        cut_off = False
        for i in range(len(data)):
            try:
                slow.sendall(data[i : i + 1])
            except OSError:
                cut_off = True
                break
            time.sleep(0.25)
        assert cut_off or slow.recv(1) == b"", "a trickled hello outlived the handshake deadline"
        wait_for_log(broker, "handshake not done within")

        with Client(address) as client:
            assert client.max_frame_bytes > 0
    finally:
        for s in socks:
            s.close()
        broker.stop()


def test_a_client_that_never_reads_is_dropped_not_buffered(tmp_path):
    # A stall counts after 4 heartbeats: 2 s here (short, yet long enough
    # that a loaded machine does not make the reading worker look silent).
    broker, address = start_broker(
        tmp_path, "--max-frame-bytes", "1048576", "--max-queued-bytes", "2097152", "--heartbeat-s", "0.5"
    )
    worker = start_worker(tmp_path, address, 1)
    try:
        wait_for_processes(address, 1)
        conn = raw_connection(address)
        conn.send(Hello(PROTOCOL_VERSION, ROLE_CLIENT, name="deaf"))
        assert isinstance(conn.recv(), Welcome)
        payload = "p" * 500_000
        # 30 MB of results on their way back to a client that reads none of
        # them, though it keeps sending pings, so it is not silent.
        for batch in range(60):
            conn.send(Submit(batch, [[batch, "echo", [payload], {}, False]]))
        deadline = time.monotonic() + WAIT_S
        while "does not read" not in broker.log() and "has read nothing" not in broker.log():
            assert time.monotonic() < deadline, broker.log()
            try:
                conn.send(Ping())
            except ConnectionLost:
                break  # dropped; the log line follows
            time.sleep(0.1)
        wait_for_log(broker, "has read nothing for")
        conn.close()
        assert worker.popen.poll() is None  # the worker, which reads, was not touched
        assert "dropping" not in worker.log()
        done = run_submit("--broker", address, "square", "4")
        assert done.returncode == 0 and done.stdout.split() == ["16"]
    finally:
        worker.stop()
        broker.stop()


def test_a_tls_record_on_a_plaintext_port_is_not_taken_for_a_frame(tmp_path):
    """The first bytes of a TLS ClientHello read as a 369 MB length; the
    broker sees them for what they are and never waits for that frame."""
    broker, address = start_broker(tmp_path, "--max-frame-bytes", "1000000000")
    try:
        conn = raw_connection(address)
        conn.send_bytes(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]) + b"\0" * 100)
        with pytest.raises(Exception):
            conn.recv()
        wait_for_log(broker, "TLS handshake on a plaintext port")
    finally:
        broker.stop()
