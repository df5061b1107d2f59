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

A failed write loses nothing: the entries of a flush that did not commit
stay queued, in order, and the writer tries them again (after
RETRY_MIN_S, doubling to RETRY_MAX_S) together with whatever came
meanwhile, until they commit. Their `after_commit` replies wait for that
commit, and so does every later one: the store acknowledges nothing that
is not on disk, and the disk never holds a later entry without the earlier
ones. While it cannot write, the store tells its owner why (`on_health`,
once per change: "disk full" or the error), so the broker refuses new jobs
rather than queue entries it cannot write; it says so again when a write
succeeds. Keeping and retrying was chosen over stopping the broker: the
in-memory state already holds those entries, running jobs can finish and
deliver their results meanwhile, and the moment space returns the broker
goes on by itself. If the broker is killed before that, the disk is
consistent as of the last commit: unwritten submissions were never
acknowledged, and unwritten finishes only mean a job runs again.

The writer thread never dies of an exception: anything a write raises is
a failed write like any other, and a failing `after_commit` is logged.

The store must never decide anything: it writes what it is given and
reads back what it wrote.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

import msgpack

from sockpool.protocol.messages import RESULT_DETACHED

from .records import FailedJob, Job, StoredResult

log = logging.getLogger("sockpool.broker.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    gid          INTEGER PRIMARY KEY,
    session      TEXT NOT NULL,
    cid          INTEGER NOT NULL,
    task         TEXT NOT NULL,
    body         BLOB NOT NULL,      -- msgpack [args, kwargs, many, options]; empty once finished
    attempts     INTEGER NOT NULL DEFAULT 0,
    ok           INTEGER,            -- NULL until the job finished
    result       BLOB,               -- msgpack value or error
    finished_at  REAL,
    detached     INTEGER NOT NULL DEFAULT 0  -- its result outlives its session
);
CREATE TABLE IF NOT EXISTS failed (
    gid          INTEGER PRIMARY KEY,
    task         TEXT NOT NULL,
    body         BLOB NOT NULL,      -- msgpack [args, kwargs, error]
    attempts     INTEGER NOT NULL,
    finished_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS failed_by_time ON failed (finished_at);
"""

Deferred = Callable[[], None]
# Told the store's trouble (a `StoreTrouble`), or None once it writes again.
HealthHandler = Callable[["StoreTrouble | None"], None]
Queued = list[tuple[list[tuple[Any, ...]], "Deferred | None"]]

# A failed write is tried again after RETRY_MIN_S, doubling up to RETRY_MAX_S.
RETRY_MIN_S = 0.1
RETRY_MAX_S = 2.0
# A store that still cannot write logs it again this often.
TROUBLE_LOG_EVERY_S = 30.0
# How long close() waits for a failing store before giving up on what is queued.
CLOSE_TIMEOUT_S = 5.0


class StoreTrouble:
    """Why the store cannot write: `disk_full` or any other failure."""

    def __init__(self, disk_full: bool, detail: str) -> None:
        self.disk_full = disk_full
        self.detail = detail

    @classmethod
    def of(cls, exc: BaseException) -> StoreTrouble:
        full = (
            getattr(exc, "sqlite_errorcode", None) == getattr(sqlite3, "SQLITE_FULL", 13)
            or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC)
            or "disk is full" in str(exc)
        )
        return cls(full, f"{type(exc).__name__}: {exc}")

    @property
    def reason(self) -> str:
        return "disk full" if self.disk_full else f"store write failed ({self.detail})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoreTrouble) and (self.disk_full, self.detail) == (other.disk_full, other.detail)

    def __repr__(self) -> str:
        return f"StoreTrouble({self.reason!r})"


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
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "detached" not in columns:  # a store from before detached jobs
            self._db.execute("ALTER TABLE jobs ADD COLUMN detached INTEGER NOT NULL DEFAULT 0")
        self._cond = threading.Condition()
        self._queue: Queued = []
        self._closing = False
        self._thread = threading.Thread(target=self._write_loop, name="store", daemon=True)
        self._on_health: HealthHandler | None = None
        self.trouble: StoreTrouble | None = None  # written by the writer thread only
        self._logged_at = 0.0

    def start(self, on_health: HealthHandler | None = None) -> None:
        """Start the writer; `on_health` hears of trouble and recovery (on
        the writer thread, so it must not call back into the store)."""
        self._on_health = on_health
        self._thread.start()

    # -- reading (at start-up, before the writer runs) ------------------------

    def load(self) -> tuple[list[Job], list[tuple[str, StoredResult]], list[FailedJob]]:
        jobs: list[Job] = []
        results: list[tuple[str, StoredResult]] = []
        rows = self._db.execute(
            "SELECT gid, session, cid, task, body, attempts, ok, result, finished_at, detached FROM jobs"
        )
        for gid, session, cid, task, body, attempts, ok, result, finished_at, detached in rows:
            if ok is None:
                args, kwargs, many, options = msgpack.unpackb(body, raw=False)
                jobs.append(Job(gid, session, cid, task, args, kwargs, many, options, attempts))
            else:
                entry = [cid, bool(ok), msgpack.unpackb(result, raw=False)]
                results.append((session, StoredResult(gid, entry, finished_at, bool(detached))))
        failed = []
        for gid, task, body, attempts, finished_at in self._db.execute(
            "SELECT gid, task, body, attempts, finished_at FROM failed"
        ):
            args, kwargs, error = msgpack.unpackb(body, raw=False)
            failed.append(FailedJob(gid, task, args, kwargs, error, attempts, finished_at))
        return jobs, results, failed

    # -- writing ---------------------------------------------------------------

    def write(self, journal: list[tuple[Any, ...]], after_commit: Deferred | None = None) -> None:
        """Queue journal entries; `after_commit` runs once they are on disk."""
        with self._cond:
            self._queue.append((journal, after_commit))
            self._cond.notify()

    def close(self) -> None:
        """Write everything queued, then close. A store that cannot write
        gets CLOSE_TIMEOUT_S more; what is still unwritten then is lost, as
        in a kill, and said so."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        else:
            queued = self._take()
            if not self._flush_guarded(queued):
                self._queue[:0] = queued
        with self._cond:
            unwritten = sum(len(journal) for journal, _ in self._queue)
        if unwritten:
            log.critical("closing with %d journal entries unwritten (%s); the store holds what was "
                         "committed before", unwritten, self.trouble.reason if self.trouble else "not written")
        self._db.close()
        self._lock_file.close()

    def _take(self) -> Queued:
        queued, self._queue = self._queue, []
        return queued

    def _write_loop(self) -> None:
        retry_s = RETRY_MIN_S
        give_up_at: float | None = None
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                queued = self._take()
                closing = self._closing
            if self._flush_guarded(queued):
                retry_s = RETRY_MIN_S
                if closing:
                    with self._cond:
                        if not self._queue:
                            return
                continue
            # Not written: back to the front, in order, before anything newer.
            with self._cond:
                self._queue[:0] = queued
                if closing:
                    give_up_at = give_up_at or time.monotonic() + CLOSE_TIMEOUT_S
                    if time.monotonic() >= give_up_at:
                        return
                self._cond.wait(retry_s)  # a close wakes us early
            retry_s = min(retry_s * 2, RETRY_MAX_S)

    def _flush_guarded(self, queued: Queued) -> bool:
        """Write and commit `queued`; whether it committed. Never raises."""
        if not queued:
            return True
        try:
            self._flush(queued)
        except Exception as exc:  # any failure: nothing committed, nothing acknowledged
            self._rollback()
            trouble = StoreTrouble.of(exc)
            if trouble.disk_full:
                self._reclaim()
            self._report(trouble, exc, sum(len(journal) for journal, _ in queued))
            return False
        if self.trouble is not None:
            log.warning("store writes again after %s; %d entries written", self.trouble.reason,
                        sum(len(journal) for journal, _ in queued))
            self.trouble = None
            self._tell(None)
        for _, after_commit in queued:
            if after_commit is not None:
                try:
                    after_commit()
                except Exception:  # top of the writer's work: log, go on
                    log.exception("a reply after a commit failed")
        return True

    def _flush(self, queued: Queued) -> None:
        """One transaction for everything queued.

        Raises:
            Exception: whatever SQLite (or packing a value) raised; nothing
                was committed.
        """
        self._db.execute("BEGIN")
        self._apply([op for journal, _ in queued for op in journal])
        self._db.execute("COMMIT")

    def _reclaim(self) -> None:
        """Give back the space our own write-ahead log holds: it only shrinks
        when a checkpoint truncates it, and on a small disk it can be most
        of what is used."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception:
            pass  # no room even for that: the next retry tries again

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except Exception:
            pass  # SQLite may have rolled back itself (a full disk does)

    def _report(self, trouble: StoreTrouble, exc: Exception, entries: int) -> None:
        now = time.monotonic()
        if trouble != self.trouble:
            log.critical("broker cannot store jobs: %s; %d journal entries kept to be written again, "
                         "new jobs are refused until then", trouble.reason, entries, exc_info=exc)
            self.trouble = trouble
            self._logged_at = now
            self._tell(trouble)
        elif now - self._logged_at >= TROUBLE_LOG_EVERY_S:
            log.critical("broker still cannot store jobs: %s; %d journal entries waiting", trouble.reason, entries)
            self._logged_at = now

    def _tell(self, trouble: StoreTrouble | None) -> None:
        if self._on_health is None:
            return
        try:
            self._on_health(trouble)
        except Exception:
            log.exception("the store's health handler failed")

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
            "INSERT OR REPLACE INTO jobs (gid, session, cid, task, body, attempts, detached) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(j.gid, j.session, j.cid, j.task, _pack([j.args, j.kwargs, j.many, j.options]), j.attempts,
              int(j.result_mode == RESULT_DETACHED))
             for _, j in by_kind.get("add", ()) if j.gid not in forgotten],
        )
        db.executemany(
            "UPDATE jobs SET attempts = ? WHERE gid = ?",
            [(n, gid) for _, gid, n in by_kind.get("attempts", ()) if gid not in forgotten],
        )
        # A finished job's arguments are never read again: dropping them
        # keeps the write (and the disk) small for jobs with large ones.
        db.executemany(
            "UPDATE jobs SET ok = ?, result = ?, finished_at = ?, body = X'' WHERE gid = ?",
            [(int(ok), _pack(value), at, gid) for _, gid, ok, value, at in by_kind.get("finish", ()) if gid not in forgotten],
        )
        db.executemany(
            "INSERT OR REPLACE INTO failed VALUES (?, ?, ?, ?, ?)",
            [(f.gid, f.task, _pack([f.args, f.kwargs, f.error]), f.attempts, f.finished_at)
             for _, f in by_kind.get("failed", ())],
        )
        db.executemany("DELETE FROM jobs WHERE gid = ?", [(gid,) for op in by_kind.get("forget", ()) for gid in op[1]])
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
