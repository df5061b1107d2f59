"""The outside review's attacks (issue #10), replayed against real processes.

Each test is one finding: what the attacker sent, and that it costs only
the attacker. On the old broker each of them failed.
"""

from __future__ import annotations

import json
import socket
import time

import msgpack
import pytest

from sockpool.client import Client, JobFailed
from sockpool.protocol import PROTOCOL_VERSION, Accepted, Error, Hello, Results, frame

from .cluster import ROOT, Proc, python_command, run_module, start_broker, start_worker, wait_for_processes
from .rawpeer import RawPeer, raw_frame

WAIT_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def submit_frame(jobs: list, batch: int = 1, **pack: bool) -> bytes:
    return frame(msgpack.packb({"type": "submit", "batch": batch, "jobs": jobs}, use_bin_type=True, **pack))


# -- 1. one submit stops durability for everyone ------------------------------


def test_an_out_of_range_job_id_is_the_senders_protocol_error_and_durability_goes_on(tmp_path):
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    try:
        with RawPeer(address) as attacker:
            attacker.send(submit_frame([[2**63, "square", [2], {}, False]]))
            last = attacker.recv_until_closed()
        assert any(isinstance(m, Error) and m.code == "bad_message" for m in last), last
        # Everyone else is still acknowledged, which means: on disk.
        with Client(address, session="victim-session-0123456789") as victim:
            victim.submit("square", 7)
            assert victim.wait_accepted(WAIT_S)
        broker.kill()  # kill -9: what was accepted must come back
        broker, address = start_broker(tmp_path, port=port)
        worker = start_worker(tmp_path, address, 1)
        try:
            with Client(address, session="victim-session-0123456789") as victim:
                [(cid, ok, value)] = victim.collect(WAIT_S)
            assert (ok, value) == (True, 49)
        finally:
            worker.stop()
    finally:
        broker.stop()


# -- 2. one client's frame fails other clients' jobs ------------------------


def test_a_job_that_would_outgrow_the_workers_frame_fails_alone(tmp_path):
    """float32 values re-encoded as float64 by the broker: the job is
    refused at submit, the worker is never dropped, the other client's
    jobs all complete."""
    broker, address = start_broker(tmp_path, "--max-frame-bytes", str(1 << 20))
    worker = start_worker(tmp_path, address, 2)
    try:
        wait_for_processes(address, 2)
        with Client(address) as victim, RawPeer(address) as attacker:
            futures = [victim.submit("square", i) for i in range(300)]
            floats = [0.5] * 150_000  # 750 KB as float32, 1.35 MB as float64
            attacker.send(submit_frame([[1, "echo", floats, {}, False]], use_single_float=True))
            replies = attacker.recv_replies(2, WAIT_S)
            assert [r.count for r in replies if isinstance(r, Accepted)] == [0]
            [refused] = [r for r in replies if isinstance(r, Results)]
            assert refused.results[0][:2] == [1, False]
            assert refused.results[0][2]["type"] == "ArgumentsTooLarge"
            futures += [victim.submit("square", i) for i in range(300, 600)]
            assert [f.result(WAIT_S) for f in futures] == [i * i for i in range(600)]
        log = broker.log()
        assert "cannot send" not in log and "too large to send" not in log
        assert worker.log().count("joined broker") == 1  # never dropped, never rejoined
    finally:
        worker.stop()
        broker.stop()


def test_arguments_nested_600_deep_are_refused_alone_and_durability_goes_on(tmp_path):
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    try:
        deep = b"\x91" * 600 + b"\x01"  # 601 bytes: [[[...[1]...]]]
        body = (
            b"\x83" + msgpack.packb("type") + msgpack.packb("submit") + msgpack.packb("batch") + b"\x01"
            + msgpack.packb("jobs") + b"\x91\x95\x01" + msgpack.packb("echo") + b"\x91" + deep + b"\x80\xc2"
        )
        with RawPeer(address) as attacker:
            attacker.send(frame(body))
            replies = attacker.recv_replies(2, WAIT_S)
        [refused] = [r for r in replies if isinstance(r, Results)]
        assert refused.results[0][2]["type"] == "ArgumentsTooDeep"
        with Client(address, session="victim-session-0123456789") as victim:
            victim.submit("square", 8)
            assert victim.wait_accepted(WAIT_S)
        broker.kill()
        broker, address = start_broker(tmp_path, port=port)
        worker = start_worker(tmp_path, address, 1)
        try:
            with Client(address, session="victim-session-0123456789") as victim:
                assert [(ok, v) for _, ok, v in victim.collect(WAIT_S)] == [(True, 64)]
        finally:
            worker.stop()
    finally:
        broker.stop()


def test_a_worker_result_with_a_non_string_error_type_drops_that_worker_not_the_job(tmp_path):
    """The old broker raised TypeError deciding on a retry; the job vanished."""
    broker, address = start_broker(tmp_path, "--in-memory")
    try:
        rogue = RawPeer(address, Hello(PROTOCOL_VERSION, "worker", name="rogue", tasks=["square"], processes=1))
        with Client(address) as client:
            future = client.submit("square", 6)
            rogue.send(raw_frame({"type": "credit", "credit": 1}))
            [jobs] = rogue.recv_replies(1, WAIT_S)
            gid = jobs.jobs[0][0]
            rogue.send(raw_frame({"type": "results", "results": [[gid, False, {"type": [1], "message": "m"}]]}))
            last = rogue.recv_until_closed()
            assert any(isinstance(m, Error) and "malformed result" in m.message for m in last), last
            rogue.close()
            # The job went back to the queue; an honest worker runs it.
            worker = start_worker(tmp_path, address, 1)
            try:
                assert future.result(WAIT_S) == 36
            finally:
                worker.stop()
    finally:
        broker.stop()


def test_a_worker_announcing_absurd_processes_is_refused_and_locks_nobody_out(tmp_path):
    broker, address = start_broker(tmp_path, "--in-memory")
    try:
        rogue = RawPeer(address, shake=False)
        rogue.send(raw_frame({"type": "hello", "version": PROTOCOL_VERSION, "role": "worker",
                              "tasks": ["square"], "processes": 2**64 - 2}))
        assert any(isinstance(m, Error) for m in rogue.recv_until_closed())
        rogue.close()
        worker = start_worker(tmp_path, address, 2)
        try:
            wait_for_processes(address, 2)
            with Client(address) as client:
                assert client.submit("square", 9).result(WAIT_S) == 81
        finally:
            worker.stop()
    finally:
        broker.stop()


# -- 3. memory before authentication --------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


PREAUTH_CONNECTIONS = 40
REVIEW_CONNECTIONS = 8


def test_a_peer_that_never_answers_the_challenge_costs_a_few_kib(tmp_path):
    secret = write_secret(tmp_path / "secret")
    broker, address = start_broker(tmp_path, "--in-memory", "--secret-file", secret, "--handshake-timeout-s", "60")
    host, port = address.rsplit(":", 1)
    socks = []
    try:
        # The review's attack: a hello of just under 1 MiB, 330,000 two-character
        # task names, and no answer to the challenge. Refused as soon as its
        # length is read (the old broker held 25.8 MB for each).
        review = raw_frame({"type": "hello", "version": PROTOCOL_VERSION, "role": "worker", "processes": 1,
                            "nonce": b"n" * 32, "tasks": ["ab"] * 330_000})
        assert len(review) < 1 << 20
        # The most a hello may now hold: as many 2-character names as fit.
        hello = raw_frame({"type": "hello", "version": PROTOCOL_VERSION, "role": "worker", "processes": 1,
                           "nonce": b"n" * 32, "tasks": ["ab"] * 1300})
        assert len(hello) <= 4096
        warm = socket.create_connection((host, int(port)), timeout=10)
        warm.sendall(hello)
        socks.append(warm)
        time.sleep(0.5)
        before = rss_bytes(broker.popen.pid)
        for _ in range(REVIEW_CONNECTIONS):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(review)
            socks.append(sock)
        for _ in range(PREAUTH_CONNECTIONS):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(hello + b"\x00" * 60_000)  # and more bytes, unasked for
            socks.append(sock)
        # Each got an answer: a challenge (the broker holds it, mid-handshake)
        # or, for the review's hello, frame_too_large.
        for sock in socks:
            assert sock.recv(4)
        time.sleep(0.5)
        growth = rss_bytes(broker.popen.pid) - before
        # A thread and a socket each, plus the few KiB read: the old broker
        # held 25.8 MB per connection here.
        print(f"broker RSS growth per unauthenticated connection: {growth / (PREAUTH_CONNECTIONS + REVIEW_CONNECTIONS):.0f} bytes")
        assert growth / (PREAUTH_CONNECTIONS + REVIEW_CONNECTIONS) < 256 * 1024, growth
    finally:
        for sock in socks:
            sock.close()
        broker.stop()


def test_a_worker_with_more_task_names_than_a_hello_holds_sends_them_after_its_welcome(tmp_path):
    secret = write_secret(tmp_path / "secret")
    module = tmp_path / "manytasks.py"
    module.write_text("".join(f"def task_with_a_rather_long_name_{i:04d}(x):\n    return x + {i}\n\n" for i in range(300)))
    broker, address = start_broker(tmp_path, "--in-memory", "--secret-file", secret)
    args = python_command("sockpool.worker", "join", address, "--processes", "1", "--tasks", "manytasks",
                          "--secret-file", secret, "--log-level", "debug")
    worker = Proc(args, tmp_path / "worker.log", env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    try:
        wait_for_processes(address, 1, secret_file=secret)
        with Client(address, secret_file=secret) as client:
            assert client.submit("manytasks:task_with_a_rather_long_name_0299", 1).result(WAIT_S) == 300
            assert client.submit("manytasks:task_with_a_rather_long_name_0000", 1).result(WAIT_S) == 1
    finally:
        worker.stop()
        broker.stop()


# -- 5. status for everyone, refused by one -------------------------------------


def test_huge_names_and_failures_cannot_make_status_or_failed_unanswerable(tmp_path):
    import urllib.request

    broker, address = start_broker(tmp_path, "--in-memory", "--max-frame-bytes", str(1 << 20), "--metrics-port", "0")
    worker = start_worker(tmp_path, address, 1, "--tasks", "tests.tasks")
    try:
        wait_for_processes(address, 1)
        for _ in range(17):  # the review's 1 MiB task names: the sender's protocol error now
            with RawPeer(address) as attacker:
                attacker.send(submit_frame([[1, "t" * 1_000_000, [], {}, False]]))
                assert any(isinstance(m, Error) for m in attacker.recv_until_closed())
        with Client(address) as client:
            failing = [client.submit("tests.tasks:fail", "x" * 600_000) for _ in range(3)]
            for future in failing:
                with pytest.raises(JobFailed):
                    future.result(WAIT_S)
            assert client.status()["totals"]["failed"] == 3
            mine = client.failed_jobs()
        assert len(mine) == 3 and all("not kept" in job["args"][0] for job in mine)
        done = run_module("sockpool.broker", "failed", "--broker", address, "--json")
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)) == 3
        with urllib.request.urlopen(f"http://{broker.metrics_address}/api/status", timeout=10) as reply:
            assert len(reply.read()) < 256 * 1024
    finally:
        worker.stop()
        broker.stop()


# -- 4. list_failed shows other clients' data ---------------------------------


def write_secret(path) -> str:
    import secrets

    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return str(path)


def test_failed_jobs_are_the_callers_own_and_every_sessions_needs_the_operator(tmp_path):
    client_secret = write_secret(tmp_path / "client")
    worker_secret = write_secret(tmp_path / "worker")
    broker, address = start_broker(tmp_path, "--secret-file", client_secret, "--worker-secret-file", worker_secret)
    worker = start_worker(tmp_path, address, 1, "--tasks", "tests.tasks", "--secret-file", worker_secret)
    try:
        wait_for_processes(address, 1, secret_file=client_secret)
        with Client(address, secret_file=client_secret) as victim:
            future = victim.submit("tests.tasks:fail", "api-key-secret-password-123")
            with pytest.raises(JobFailed):
                future.result(WAIT_S)
            assert [j["args"] for j in victim.failed_jobs()] == [["api-key-secret-password-123"]]
        with Client(address, secret_file=client_secret) as attacker:
            assert attacker.failed_jobs() == []
        # `broker failed` is the operator's: the client secret does not open it...
        done = run_module("sockpool.broker", "failed", "--broker", address, "--secret-file", client_secret, "--json")
        assert done.returncode != 0 and "authentication failed" in done.stderr
        # ...the operator's (here: by default, the worker secret) does.
        done = run_module("sockpool.broker", "failed", "--broker", address, "--secret-file", worker_secret, "--json")
        assert done.returncode == 0, done.stderr
        assert [job["args"] for job in json.loads(done.stdout)] == [["api-key-secret-password-123"]]
    finally:
        worker.stop()
        broker.stop()


def test_an_operator_secret_of_its_own(tmp_path):
    client_secret = write_secret(tmp_path / "client")
    operator_secret = write_secret(tmp_path / "operator")
    broker, address = start_broker(tmp_path, "--in-memory", "--secret-file", client_secret,
                                   "--operator-secret-file", operator_secret)
    try:
        env = {"SOCKPOOL_OPERATOR_SECRET_FILE": operator_secret}
        done = run_module("sockpool.broker", "failed", "--broker", address, env=env)
        assert done.returncode == 0, done.stderr
        assert "0 failed jobs" in done.stderr
        done = run_module("sockpool.broker", "failed", "--broker", address, "--secret-file", client_secret)
        assert done.returncode != 0
        # `broker status --operator` takes the operator's secret from its own variable too.
        done = run_module("sockpool.broker", "status", "--broker", address, "--operator", "--json",
                          env={**env, "SOCKPOOL_SECRET_FILE": client_secret})
        assert done.returncode == 0, done.stderr
        done = run_module("sockpool.broker", "status", "--broker", address, "--json", "--secret-file", client_secret)
        assert done.returncode == 0, done.stderr
    finally:
        broker.stop()


# -- 6. the metrics port has no limits ------------------------------------------


def threads_of(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads")


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def http_status(address: str, host_header: str) -> int:
    import http.client

    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/api/status", headers={"Host": host_header})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.slow
def test_idle_http_connections_are_capped_and_cut_and_the_broker_port_still_serves(tmp_path):
    broker, address = start_broker(tmp_path, "--in-memory", "--metrics-port", "0")
    worker = start_worker(tmp_path, address, 1)
    host, port = broker.metrics_address.rsplit(":", 1)
    idle = []
    try:
        wait_for_processes(address, 1)
        before = threads_of(broker.popen.pid)
        idle = [socket.create_connection((host, int(port)), timeout=30) for _ in range(200)]
        time.sleep(1.0)
        assert threads_of(broker.popen.pid) - before <= 16 + 2  # the cap, not 200
        with Client(address) as client:
            assert client.submit("square", 12).result(WAIT_S) == 144
        # Those over the cap were closed at once; the others are cut by the
        # read timeout: none is held for ever.
        started = time.monotonic()
        for sock in idle:
            assert closed_by_peer(sock)
        assert time.monotonic() - started < 20
        for sock in idle:
            sock.close()
        idle = []
        wait_for(lambda: threads_of(broker.popen.pid) <= before + 1)
        assert http_status(broker.metrics_address, broker.metrics_address) == 200
    finally:
        for sock in idle:
            sock.close()
        worker.stop()
        broker.stop()


def test_the_metrics_port_answers_only_requests_that_name_it(tmp_path):
    """DNS rebinding: a page on evil.example, resolved to 127.0.0.1, sends Host: evil.example."""
    broker, address = start_broker(tmp_path, "--in-memory", "--metrics-port", "0", "--metrics-host", "metrics.internal")
    try:
        port = broker.metrics_address.rsplit(":", 1)[1]
        assert http_status(broker.metrics_address, f"metrics.internal:{port}") == 200
        assert http_status(broker.metrics_address, f"evil.example:{port}") == 421
        assert http_status(broker.metrics_address, "evil.example") == 421
        assert http_status(broker.metrics_address, f"127.0.0.1:{port}") == 200
        assert http_status(broker.metrics_address, f"localhost:{port}") == 200
    finally:
        broker.stop()


# -- smaller: what a frame can cost is proportional to its size ----------------


def test_long_argument_lists_the_broker_keeps_packed_arrive_unchanged(tmp_path):
    broker, address = start_broker(tmp_path, "--in-memory")
    worker = start_worker(tmp_path, address, 2, "--tasks", "tests.tasks")
    try:
        wait_for_processes(address, 2)
        with Client(address) as client:
            # A burst: thousands of jobs to a frame, well over the 64 KiB past
            # which the broker packs argument lists of 16 items or more.
            futures = [client.submit("tests.tasks:total", *range(i, i + 20)) for i in range(3000)]
            assert [f.result(WAIT_S) for f in futures] == [sum(range(i, i + 20)) for i in range(3000)]
            # Keyword values too (and tuples in them, which the client packs itself).
            rows = [{"k": i} for i in range(40)]
            futures = [client.submit("tests.tasks:pair", i, b=rows) for i in range(2000)]
            assert [f.result(WAIT_S) for f in futures] == [(i, rows) for i in range(2000)]
            futures = [client.submit("tests.tasks:types_of", i, rows=rows, pair=(1, 2)) for i in range(2000)]
            assert {repr(f.result(WAIT_S)) for f in futures} == {repr((["int"], {"rows": "list", "pair": "tuple"}))}
    finally:
        worker.stop()
        broker.stop()


@pytest.mark.slow
def test_a_frame_of_empty_maps_costs_the_broker_about_its_size(tmp_path):
    broker, address = start_broker(tmp_path, "--in-memory")
    try:
        with Client(address) as warm:
            warm.submit("square", 1)
            assert warm.wait_accepted(WAIT_S)
        before = rss_bytes(broker.popen.pid)
        with RawPeer(address) as attacker:
            # 2 MiB of empty maps: 64 bytes each once decoded (the old broker grew
            # by 300 MB for 4 MiB of them).
            attacker.send(submit_frame([[1, "echo", [{}] * (2 << 20), {}, False]]))
            # And 1 MiB of them as a keyword argument.
            attacker.send(submit_frame([[2, "echo", [], {"value": [{}] * (1 << 20)}, False]], batch=2))
            accepted = []
            while len(accepted) < 2:
                accepted += [m.batch for m in attacker.recv_replies(1, WAIT_S) if isinstance(m, Accepted)]
            assert accepted == [1, 2]
            time.sleep(0.5)
            growth = rss_bytes(broker.popen.pid) - before
        print(f"broker RSS growth for 3 MiB of empty maps in two frames, queued: {growth / 2**20:.1f} MiB")
        assert growth < 40 << 20, growth  # the old broker: about 200 MB
    finally:
        broker.stop()


def test_a_newline_in_a_peers_name_cannot_forge_a_broker_log_line(tmp_path):
    broker, address = start_broker(tmp_path, "--in-memory")
    try:
        forged = "x\n2026-12-01 10:00:00 INFO sockpool.broker: worker admin joined"
        with RawPeer(address, Hello(PROTOCOL_VERSION, "client", name=forged)):
            pass
        wait_for(lambda: "x\\x0a2026" in broker.log())
        assert not any(line.startswith("2026-12-01 10:00:00 INFO") for line in broker.log().splitlines())
    finally:
        broker.stop()


# -- quotas ---------------------------------------------------------------------


def test_a_full_broker_refuses_with_broker_full_and_keeps_everything_it_accepted(tmp_path):
    from sockpool.client import BrokerFull

    port = free_port()
    broker, address = start_broker(tmp_path, port=port, *("--max-queued-jobs", "5", "--max-session-jobs", "4"))
    try:
        with Client(address, session="first-session-0123456789") as first:
            futures = [first.submit("square", i) for i in range(6)]
            assert first.wait_accepted(WAIT_S)
            with pytest.raises(BrokerFull, match="--max-session-jobs"):
                futures[4].result(WAIT_S)
            assert first.refused == 2
        done = run_module("sockpool.client", "--detach", "--broker", address, "square", "7", "8")
        assert done.returncode != 0 and "1 of 2 jobs not accepted" in done.stderr, done.stderr
        assert "--max-queued-jobs" in done.stderr
        done = run_module("sockpool.client", "--broker", address, "square", "9")
        assert done.returncode != 0 and "BrokerFull: broker full" in done.stderr, done.stderr
        broker.kill()  # kill -9: the five accepted jobs are on disk, the refused ones nowhere
        broker, address = start_broker(tmp_path, port=port, *("--max-queued-jobs", "5"))
        worker = start_worker(tmp_path, address, 1)
        try:
            with Client(address, session="first-session-0123456789") as first:
                assert sorted((cid, v) for cid, ok, v in first.collect(WAIT_S)) == [(i + 1, i * i) for i in range(4)]
            with Client(address) as later:  # room again, once they ran
                assert later.submit("square", 10).result(WAIT_S) == 100
        finally:
            worker.stop()
    finally:
        broker.stop()


# -- 8. data at rest ------------------------------------------------------------


def test_the_data_directory_and_its_files_are_private_whatever_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)  # the usual default: the broker inherits it
    try:
        broker, address = start_broker(tmp_path)
    finally:
        os.umask(old)
    data = tmp_path / "data"
    try:
        with Client(address) as client:
            client.submit("square", 3)  # no worker: it stays queued, on disk
            client.submit("square", b"x" * 100_000)  # large: its body is a file of its own
            assert client.wait_accepted(WAIT_S)
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        files = {str(p.relative_to(data)): stat.S_IMODE(p.stat().st_mode) for p in data.rglob("*")}
        assert {"broker.sqlite3", "broker.sqlite3-wal", "broker.lock", "blobs"} <= set(files), files
        assert len([name for name in files if name.startswith("blobs/")]) == 1, files
        assert all(mode == (0o700 if (data / name).is_dir() else 0o600) for name, mode in files.items()), files
    finally:
        broker.stop()


def test_an_existing_data_directory_left_readable_is_made_private(tmp_path):
    import stat

    from sockpool.broker.store.sqlite import SqliteStore

    data = tmp_path / "old"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "broker.sqlite3").touch()
    (data / "broker.sqlite3").chmod(0o644)
    (data / "blobs").mkdir()
    (data / "blobs").chmod(0o755)
    store = SqliteStore(data)
    try:
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600) for p in data.iterdir())
    finally:
        store.close()


def test_a_broker_refuses_a_secret_file_others_can_read(tmp_path):
    secret = write_secret(tmp_path / "secret")
    os_chmod = __import__("os").chmod
    os_chmod(secret, 0o644)
    done = run_module("sockpool.broker", "start", "--port", "0", "--in-memory", "--secret-file", secret, timeout_s=30)
    assert done.returncode != 0
    assert "accessible by other users" in done.stderr and "chmod 600" in done.stderr


def wait_for(condition, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)
