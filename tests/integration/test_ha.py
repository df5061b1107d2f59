"""Several brokers on one PostgreSQL store: one active, failover, fencing.

A real PostgreSQL server of the tests' own (tests/integration/postgres.py),
real broker and worker processes, real signals. Clients and workers are
given every broker's address and must follow the active one, with every
result exactly once (a client's future resolves once; the results must be
complete and right; the runs on disk show every job ran).
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from sockpool.client import Client, Executor
from sockpool.net.connection import Connection, connect, new_hello
from sockpool.protocol import ROLE_CLIENT, ConnectionLost, Submit

from tests import tasks

from .cluster import Proc, python_command, run_module, run_submit, start_broker, start_worker, wait_for_processes
from .postgres import PostgresServer, require_server_binaries

WAIT_S = 60
# Short heartbeats, so a client or worker of a frozen broker notices within 2 s.
HEARTBEAT = ("--heartbeat-s", "0.5")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(require_server_binaries())
    try:
        yield server
    finally:
        server.stop(remove=True)


@pytest.fixture
def store_url(postgres: PostgresServer) -> str:
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")


def wait_until(condition, timeout_s: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.05)


def epochs(proc: Proc) -> list[int]:
    """The epochs in which this broker became active, from its log."""
    return [int(m) for m in re.findall(r"active \(epoch (\d+)\)", proc.log())]


class Pair:
    """Brokers on one store (each in its own folder, on its own port) and the workers."""

    def __init__(self, root: Path, url: str, count: int = 2, metrics: bool = False) -> None:
        self.root, self.url = root, url
        self.metrics = ("--metrics-port", "0") if metrics else ()
        self.brokers: list[Proc] = []
        self.addresses: list[str] = []
        self.workers: list[Proc] = []
        for i in range(count):
            proc, address = self._start(i)
            self.brokers.append(proc)
            self.addresses.append(address)
            if i == 0:
                wait_until(lambda: epochs(proc), 20, "the first broker leading")

    def _start(self, i: int, port: int = 0) -> tuple[Proc, str]:
        log_dir = self.root / f"b{i}"
        log_dir.mkdir(exist_ok=True)
        return start_broker(log_dir, "--store", self.url, "--name", f"b{i}", *HEARTBEAT, *self.metrics, port=port)

    @property
    def address(self) -> str:
        return ",".join(self.addresses)

    def active(self) -> int:
        """Index of the broker that took the highest epoch."""
        best = max(range(len(self.brokers)), key=lambda i: max(epochs(self.brokers[i]), default=0))
        return best

    def top_epoch(self) -> int:
        return max(max(epochs(b), default=0) for b in self.brokers)

    def restart(self, i: int) -> None:
        """Start broker i again on its old port (after a kill)."""
        port = int(self.addresses[i].rsplit(":", 1)[1])
        self.brokers[i].stop()
        self.brokers[i], _ = self._start(i, port)

    def add_worker(self, processes: int = 2) -> None:
        self.workers.append(start_worker(self.root, self.address, processes, "--tasks", "tests.tasks",
                                         name=f"w{len(self.workers)}"))

    def logs(self) -> str:
        return "\n".join(f"== {p.log_path}\n{p.log()[-6000:]}" for p in [*self.brokers, *self.workers])

    def stop(self) -> None:
        for proc in [*self.workers, *self.brokers]:
            if proc.popen.poll() is None:
                try:
                    proc.popen.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
            proc.stop()


@pytest.fixture
def pair(request: pytest.FixtureRequest, tmp_path: Path, store_url: str) -> Iterator[Pair]:
    failed_before = request.session.testsfailed
    p = Pair(tmp_path, store_url)
    try:
        yield p
    finally:
        p.stop()
        if request.session.testsfailed > failed_before:
            print(p.logs())  # shown with the failure


def store_rows(url: str, sql: str, *params) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def test_standby_refuses_and_names_the_active_broker(tmp_path: Path, store_url: str):
    pair = Pair(tmp_path, store_url, metrics=True)
    try:
        standby_refuses_and_names_the_active_broker(pair)
    finally:
        pair.stop()


def standby_refuses_and_names_the_active_broker(pair: Pair) -> None:
    with pytest.raises(ConnectionLost, match=r"standby; the active broker is at .*:\d+"):
        with Client(pair.addresses[1], connect_timeout_s=5, reconnect_timeout_s=0):
            pass
    # Given both addresses, in either order, a client finds the active one.
    for address in (pair.address, ",".join(reversed(pair.addresses))):
        with Client(address, connect_timeout_s=5) as client:
            assert client._link.welcome.broker == "b0"
    # The metrics say which broker serves.
    import urllib.request

    for proc, active in zip(pair.brokers, (1, 0)):
        with urllib.request.urlopen(f"http://{proc.metrics_address}/metrics", timeout=10) as reply:
            assert f"sockpool_broker_active {active}.0" in reply.read().decode()


def test_executor_cli_and_environment_follow_a_clean_handover(pair: Pair, tmp_path: Path):
    """SIGTERM on the active broker hands over at once (it releases its
    lease); a worker given the list in SOCKPOOL_BROKER, an Executor and the
    submit CLI all follow."""
    worker = Proc(python_command("sockpool.worker", "join", "--processes", "2", "--tasks", "tests.tasks",
                                 "--name", "wenv", "--log-level", "debug"),
                  tmp_path / "worker-env.log", env={"SOCKPOOL_BROKER": pair.address})
    pair.workers.append(worker)
    wait_for_processes(pair.address, 2)
    with Executor(pair.address) as executor:
        assert list(executor.map(tasks.cube, range(5))) == [0, 1, 8, 27, 64]
        pair.brokers[0].stop()
        assert "could not release" not in pair.brokers[0].log()
        wait_until(lambda: epochs(pair.brokers[1]) == [2], 20, "the standby taking over")
        assert list(executor.map(tasks.cube, range(5, 8))) == [125, 216, 343]
    done = run_submit("tests.tasks:cube", "3", "4", env={"SOCKPOOL_BROKER": pair.address})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["27", "64"]
    done = run_submit("--broker", pair.address, "tests.tasks:cube", "5")
    assert done.stdout.split() == ["125"], done.stderr


def run_through_kills(pair: Pair, tmp_path: Path, kills: int, how) -> None:
    """Submit jobs, disturb the active broker `kills` times with `how`, and
    check every result arrives, right, exactly once."""
    marks = tmp_path / "marks"
    marks.mkdir()
    pair.add_worker(2)
    wait_for_processes(pair.address, 2)
    n = 120
    with Client(pair.address, connect_timeout_s=5) as client:
        futures = [client.submit("tests.tasks:slow_square", i, 0.05, str(marks)) for i in range(n)]
        for round_ in range(kills):
            done_before = sum(f.done() for f in futures)
            wait_until(lambda: sum(f.done() for f in futures) >= min(n, done_before + 8), what="progress")
            epoch = pair.top_epoch()
            how(pair, pair.active())
            wait_until(lambda: pair.top_epoch() > epoch, 30, f"a new leader after disturbance {round_ + 1}")
        results = [f.result(WAIT_S) for f in futures]
    assert results == [i * i for i in range(n)]
    assert sorted(p.name for p in marks.iterdir()) == sorted(f"sq{i}" for i in range(n))


@pytest.mark.slow
def test_kill_9_of_the_active_broker_many_times(pair: Pair, tmp_path: Path):
    def kill(pair: Pair, i: int) -> None:
        pair.brokers[i].kill()
        pair.restart(i)  # comes back as a standby

    run_through_kills(pair, tmp_path, 3, kill)
    # Every restore was a restart: nothing is left unfinished in the store.
    wait_until(lambda: store_rows(pair.url, "SELECT count(*) FROM sockpool_jobs WHERE ok IS NULL") == [(0,)],
               10, "no unfinished job in the store")


@pytest.mark.slow
def test_sigstopped_leader_is_fenced_when_it_wakes(pair: Pair, tmp_path: Path):
    old = pair.brokers[0]
    # A client of the old leader that the test speaks for by hand, to see
    # exactly what reaches it.
    session = f"raw-{uuid.uuid4().hex[:8]}"
    raw, _ = connect(pair.addresses[0], new_hello(ROLE_CLIENT, name="raw", session=session), 5)
    pair.add_worker(2)
    wait_for_processes(pair.address, 2)
    with Client(pair.address, connect_timeout_s=5) as client:
        assert client.submit("tests.tasks:add", 1, 2).result(WAIT_S) == 3
        old.popen.send_signal(signal.SIGSTOP)
        # What it sent before it froze (heartbeats) is not the question.
        drain(raw, 0.5, close=False)
        # Sent while it is frozen: it reads this only after it wakes.
        raw.send(Submit(1, [[1, "tests.tasks:add", [20, 22], {}, False]]))
        wait_until(lambda: epochs(pair.brokers[1]), 30, "the standby taking over")
        # The clients and workers follow the new leader.
        assert client.submit("tests.tasks:add", 2, 3).result(WAIT_S) == 5
        old.popen.send_signal(signal.SIGCONT)
        wait_until(lambda: "stopped serving" in old.log(), 20, "the old leader noticing it lost the lead")
        assert re.search(r"stopped serving: (fenced|lease expired)", old.log()), old.log()[-3000:]
        heard = drain(raw, 5)
        assert heard == [], f"the fenced broker sent {heard}"
        assert store_rows(pair.url, "SELECT count(*) FROM sockpool_jobs WHERE session = %s", session) == [(0,)]
        assert store_rows(pair.url, "SELECT holder FROM sockpool_leader") == [("b1",)]
        assert client.submit("tests.tasks:add", 3, 4).result(WAIT_S) == 7


def drain(conn: Connection, timeout_s: float, close: bool = True) -> list[str]:
    """Every message type that arrives until the connection closes (or `timeout_s`)."""
    heard = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                heard.append(conn.recv(deadline).type)
            except TimeoutError:
                break
    except ConnectionLost:
        pass
    finally:
        if close:
            conn.close()
    return heard


def test_leader_cut_off_from_postgres_is_fenced(postgres: PostgresServer, tmp_path: Path):
    """The active broker's database role may no longer log in and its
    sessions are terminated: the standby takes over, the old one stops."""
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    role = f"b0_{uuid.uuid4().hex[:6]}"
    store_rows(url, f"CREATE ROLE {role} LOGIN SUPERUSER")
    pair = Pair(tmp_path, url.replace("postgres@", f"{role}@"), count=1)
    try:
        pair.url = url  # the standby logs in as postgres
        second, address = pair._start(1)
        pair.brokers.append(second)
        pair.addresses.append(address)

        def cut(pair: Pair, i: int) -> None:
            assert i == 0
            store_rows(url, f"ALTER ROLE {role} NOLOGIN")
            store_rows(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", role)

        run_through_kills(pair, tmp_path, 1, cut)
        assert "stopped serving" in pair.brokers[0].log()
        assert store_rows(url, "SELECT holder FROM sockpool_leader") == [("b1",)]
    except BaseException:
        print(pair.logs())
        raise
    finally:
        pair.stop()


@pytest.mark.slow
def test_database_restart_mid_run(tmp_path: Path):
    server = PostgresServer(require_server_binaries(), fsync=True)
    try:
        pair = Pair(tmp_path, server.create_database("ha"))
        try:
            def restart_db(pair: Pair, i: int) -> None:
                server.stop()
                time.sleep(1.0)  # down for a while: longer than the lease is valid
                server.start()

            run_through_kills(pair, tmp_path, 1, restart_db)
        except BaseException:
            print(pair.logs())
            raise
        finally:
            pair.stop()
    finally:
        server.stop(remove=True)


def test_takeover_ends_a_frozen_leaders_transaction(pair: Pair):
    """A leader frozen inside a commit holds the lease row's share lock; the
    server does not end such a session by itself. Here a session of the
    test's holds that lock as the frozen writer would: once the lease has
    expired the standby ends it and takes over."""
    import psycopg

    frozen = psycopg.connect(pair.url)
    frozen.execute("SELECT epoch FROM sockpool_leader WHERE id = 1 FOR SHARE")  # and the transaction stays open
    pair.brokers[0].popen.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: epochs(pair.brokers[1]), 30, "the standby taking over")
        assert "ended 1 session(s) of the expired leader" in pair.brokers[1].log()
        with pytest.raises(psycopg.OperationalError):
            frozen.execute("SELECT 1")
    finally:
        pair.brokers[0].popen.send_signal(signal.SIGCONT)
        frozen.close()
    with Client(pair.address, connect_timeout_s=5) as client:
        assert client._link.welcome.broker == "b1"


def test_schema_is_versioned_and_a_newer_one_is_refused(store_url: str, tmp_path: Path):
    import psycopg

    from sockpool.broker.store.postgres import MIGRATIONS, SCHEMA_VERSION, PostgresStore

    # A store as the first release left it: version 1, with a job in it.
    with psycopg.connect(store_url) as conn:
        conn.execute("CREATE TABLE sockpool_schema (version INTEGER NOT NULL); INSERT INTO sockpool_schema VALUES (1)")
        conn.execute(MIGRATIONS[1])
        conn.execute("INSERT INTO sockpool_jobs (gid, session, cid, task, body) VALUES (7, 's', 1, 't', %s)",
                     (b"\x94\x90\x80\xc2\x80",))  # msgpack [[], {}, false, {}]
    store = PostgresStore(store_url)
    assert [(j.gid, j.task) for j in store.restore().jobs] == [(7, "t")]
    store.close()
    PostgresStore(store_url).close()  # a second start migrates nothing
    assert store_rows(store_url, "SELECT version FROM sockpool_schema") == [(SCHEMA_VERSION,)]
    store_rows(store_url, "UPDATE sockpool_schema SET version = %s", SCHEMA_VERSION + 1)
    done = run_module("sockpool.broker", "start", "--port", "0", "--store", store_url, timeout_s=30)
    assert done.returncode != 0
    assert f"schema is version {SCHEMA_VERSION + 1}" in done.stderr and "upgrade sockpool" in done.stderr


def test_unreachable_store_is_a_clear_error(tmp_path: Path):
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'sockpool[postgres]'")
    from .postgres import free_port

    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/nowhere"
    done = run_module("sockpool.broker", "start", "--port", "0", "--store", url, timeout_s=30)
    assert done.returncode != 0
    assert "cannot use the store postgresql://postgres:***@127.0.0.1" in done.stderr
    assert "hunter2" not in done.stderr
    done = run_module("sockpool.broker", "start", "--port", "0", "--store", "mysql://x", timeout_s=30)
    assert done.returncode != 0 and "expected a postgresql:// URL" in done.stderr


def test_unique_key_followers_survive_a_failover(pair: Pair, tmp_path: Path):
    """A submission that joined a job by its unique key is in the PostgreSQL
    store too: after kill -9 of the leader, both submitters get the outcome."""
    marks = tmp_path / "marks"
    marks.mkdir()
    pair.add_worker(2)
    wait_for_processes(pair.address, 2)
    with Client(pair.address, connect_timeout_s=5) as first, Client(pair.address, connect_timeout_s=5) as second:
        a = first.with_options(key="invoice-1").submit("tests.tasks:slow_square", 6, 1.5, str(marks))
        assert first._link.wait_accepted(10)
        b = second.with_options(key="invoice-1").submit("tests.tasks:slow_square", 6, 1.5, str(marks))
        assert second._link.wait_accepted(10)
        assert store_rows(pair.url, "SELECT count(*) FROM sockpool_followers") == [(1,)]
        pair.brokers[0].kill()
        assert a.result(WAIT_S) == 36 and b.result(WAIT_S) == 36
    assert epochs(pair.brokers[1]) == [2]


def test_a_pause_and_a_schedule_survive_a_kill_9_on_postgresql(store_url: str, tmp_path: Path):
    broker, address = start_broker(tmp_path, "--store", store_url)
    try:
        with Client(address, operator=True) as ops:
            ops.pause_queue("gpu")
            ops.add_schedule("nightly", "0 3 * * *", "tests.tasks:add", 1, 2, timezone="Europe/Paris")
        broker.kill()
        broker, address = start_broker(tmp_path, "--store", store_url)
        # It leads once the killed broker's lease expires (a standby refuses till then).
        def leads() -> bool:
            try:
                Client(address, operator=True, connect_timeout_s=1).close()
            except ConnectionLost:
                return False
            return True

        wait_until(leads, what="the new broker leading")
        with Client(address, operator=True) as ops:
            status = ops.status()
            [row] = ops.schedules()
        assert status["queues"]["gpu"]["paused"]
        assert (row["name"], row["args"], row["timezone"]) == ("nightly", [1, 2], "Europe/Paris")
    finally:
        broker.stop()
