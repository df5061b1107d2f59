"""The broker's durable store: SQLite in WAL mode, written by one thread.

The state journals what must survive a restart; `Store.write()` queues
those entries together with the replies that may only be sent once they
are on disk (the `accepted` acknowledgements). A single writer thread
takes everything queued, writes it in one transaction and commits: one
commit covers every submission that arrived meanwhile (group commit), so
durability costs a commit per batch, not per job.

With `synchronous=NORMAL` a commit survives the broker being killed;
`fsync=True` (`--fsync`) makes it survive a power cut too, at the cost of
an fsync per commit.

The store must never decide anything: it writes what it is given and
reads back what it wrote.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

import msgpack

from .records import FailedJob, Job, StoredResult

log = logging.getLogger("sockpool.broker.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    gid          INTEGER PRIMARY KEY,
    session      TEXT NOT NULL,
    cid          INTEGER NOT NULL,
    task         TEXT NOT NULL,
    body         BLOB NOT NULL,      -- msgpack [args, kwargs, many, options]
    attempts     INTEGER NOT NULL DEFAULT 0,
    ok           INTEGER,            -- NULL until the job finished
    result       BLOB,               -- msgpack value or error
    finished_at  REAL
);
CREATE TABLE IF NOT EXISTS failed (
    gid          INTEGER PRIMARY KEY,
    task         TEXT NOT NULL,
    body         BLOB NOT NULL,      -- msgpack [args, kwargs, error]
    attempts     INTEGER NOT NULL,
    finished_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS failed_by_time ON failed (finished_at);
CREATE TABLE IF NOT EXISTS paused_queues (
    queue        TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS schedules (
    name         TEXT PRIMARY KEY,
    body         BLOB NOT NULL       -- msgpack Schedule.record(): definition, since, last outcome
);
"""

Deferred = Callable[[], None]


class DataDirBusy(Exception):
    """Another broker already uses this data directory."""


class Store:
    def __init__(self, data_dir: Path, *, fsync: bool = False) -> None:
        """Open (or create) the store in `data_dir`.

        Raises:
            DataDirBusy: another broker holds the directory's lock.
            sqlite3.Error: the database cannot be opened.
        """
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "broker.sqlite3"
        # Two brokers on one store would both run its jobs.
        self._lock_file = open(data_dir / "broker.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise DataDirBusy(f"{data_dir} is in use by another broker") from None
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.executescript(SCHEMA)
        self._cond = threading.Condition()
        self._queue: list[tuple[list[tuple[Any, ...]], Deferred | None]] = []
        self._closing = False
        self._thread = threading.Thread(target=self._write_loop, name="store", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- reading (at start-up, before the writer runs) ------------------------

    def load(self) -> tuple[list[Job], list[tuple[str, StoredResult]], list[FailedJob]]:
        jobs: list[Job] = []
        results: list[tuple[str, StoredResult]] = []
        rows = self._db.execute("SELECT gid, session, cid, task, body, attempts, ok, result, finished_at FROM jobs")
        for gid, session, cid, task, body, attempts, ok, result, finished_at in rows:
            if ok is None:
                args, kwargs, many, options = msgpack.unpackb(body, raw=False)
                jobs.append(Job(gid, session, cid, task, args, kwargs, many, options, attempts))
            else:
                entry = [cid, bool(ok), msgpack.unpackb(result, raw=False)]
                results.append((session, StoredResult(gid, entry, finished_at)))
        failed = []
        for gid, task, body, attempts, finished_at in self._db.execute(
            "SELECT gid, task, body, attempts, finished_at FROM failed"
        ):
            args, kwargs, error = msgpack.unpackb(body, raw=False)
            failed.append(FailedJob(gid, task, args, kwargs, error, attempts, finished_at))
        return jobs, results, failed

    def load_settings(self) -> tuple[list[str], list[dict[str, Any]]]:
        """Paused queues and schedule records."""
        paused = [queue for (queue,) in self._db.execute("SELECT queue FROM paused_queues")]
        schedules = [msgpack.unpackb(body, raw=False) for (body,) in self._db.execute("SELECT body FROM schedules")]
        return paused, schedules

    # -- writing ---------------------------------------------------------------

    def write(self, journal: list[tuple[Any, ...]], after_commit: Deferred | None = None) -> None:
        """Queue journal entries; `after_commit` runs once they are on disk."""
        with self._cond:
            self._queue.append((journal, after_commit))
            self._cond.notify()

    def close(self) -> None:
        """Write everything queued, then close."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        else:
            self._flush(self._take())
        self._db.close()
        self._lock_file.close()

    def _take(self) -> list[tuple[list[tuple[Any, ...]], Deferred | None]]:
        queued, self._queue = self._queue, []
        return queued

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                queued = self._take()
                closing = self._closing
            self._flush(queued)
            if closing:
                with self._cond:
                    rest = self._take()
                self._flush(rest)
                return

    def _flush(self, queued: list[tuple[list[tuple[Any, ...]], Deferred | None]]) -> None:
        if not queued:
            return
        try:
            self._db.execute("BEGIN")
            self._apply([op for journal, _ in queued for op in journal])
            self._db.execute("COMMIT")
        except sqlite3.Error:
            # Nothing is acknowledged that did not commit: clients resend
            # unacknowledged submissions when they reconnect.
            log.exception("store write failed; %d batches not acknowledged", len(queued))
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return
        for _, after_commit in queued:
            if after_commit is not None:
                after_commit()

    def _apply(self, journal: list[tuple[Any, ...]]) -> None:
        """Write a flush's journal, one statement per kind of entry.

        Grouping by kind is safe because a job's entries only ever come in
        this order: add, attempts, finish, failed, forget.
        """
        by_kind: dict[str, list[tuple[Any, ...]]] = {}
        for op in journal:
            by_kind.setdefault(op[0], []).append(op)
        # A job acknowledged within this flush needs no row at all: whatever
        # its add, attempts and finish would write, the delete removes.
        forgotten = {gid for op in by_kind.get("forget", ()) for gid in op[1]}
        db = self._db
        db.executemany(
            "INSERT OR REPLACE INTO jobs (gid, session, cid, task, body, attempts) VALUES (?, ?, ?, ?, ?, ?)",
            [(j.gid, j.session, j.cid, j.task, _pack([j.args, j.kwargs, j.many, j.options]), j.attempts)
             for _, j in by_kind.get("add", ()) if j.gid not in forgotten],
        )
        db.executemany(
            "UPDATE jobs SET attempts = ? WHERE gid = ?",
            [(n, gid) for _, gid, n in by_kind.get("attempts", ()) if gid not in forgotten],
        )
        db.executemany(
            "UPDATE jobs SET ok = ?, result = ?, finished_at = ? WHERE gid = ?",
            [(int(ok), _pack(value), at, gid) for _, gid, ok, value, at in by_kind.get("finish", ()) if gid not in forgotten],
        )
        db.executemany(
            "INSERT OR REPLACE INTO failed VALUES (?, ?, ?, ?, ?)",
            [(f.gid, f.task, _pack([f.args, f.kwargs, f.error]), f.attempts, f.finished_at)
             for _, f in by_kind.get("failed", ())],
        )
        db.executemany("DELETE FROM jobs WHERE gid = ?", [(gid,) for op in by_kind.get("forget", ()) for gid in op[1]])
        # Settings change rarely and their order matters (add, then remove):
        # one statement each, in journal order.
        for op in journal:
            if op[0] == "queue_paused":
                if op[2]:
                    db.execute("INSERT OR IGNORE INTO paused_queues VALUES (?)", (op[1],))
                else:
                    db.execute("DELETE FROM paused_queues WHERE queue = ?", (op[1],))
            elif op[0] == "schedule":
                db.execute("INSERT OR REPLACE INTO schedules VALUES (?, ?)", (op[1]["name"], _pack(op[1])))
            elif op[0] == "unschedule":
                db.execute("DELETE FROM schedules WHERE name = ?", (op[1],))
        for _, cutoff in by_kind.get("expire", ()):
            db.execute("DELETE FROM jobs WHERE finished_at < ?", (cutoff,))
            db.execute("DELETE FROM failed WHERE finished_at < ?", (cutoff,))


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def default_data_dir(port: int) -> Path:
    """Per user and per port: $XDG_DATA_HOME/sockpool/broker-PORT
    (~/.local/share/sockpool/broker-PORT when XDG_DATA_HOME is unset)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "sockpool" / f"broker-{port}"
