"""The default store: SQLite in WAL mode in the broker's data directory.

With `synchronous=NORMAL` a commit survives the broker being killed;
`fsync=True` (`--fsync`) makes it survive a power cut too, at the cost of
an fsync per commit. A lock file keeps a second broker off the directory:
with SQLite there is exactly one broker per store, so it is always the
leader and nothing needs fencing.

A job body of 64 KiB or more lives in a file of its own beside the
database (blobs.py says why, and the crash-ordering rules); its row holds
an empty body.

The store must never decide anything: it writes what it is given and
reads back what it wrote.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import msgpack

from .base import GroupCommitStore
from .rows import Journal, Snapshot, rows_for, snapshot_from_rows, unfinished_from_rows
from .blobs import BLOB_FILE_BYTES, BlobFiles

log = logging.getLogger("sockpool.broker.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    gid          INTEGER PRIMARY KEY,
    session      TEXT NOT NULL,
    cid          INTEGER NOT NULL,
    task         TEXT NOT NULL,
    body         BLOB NOT NULL,      -- msgpack [args, kwargs, many, options]; empty once finished,
                                     -- or while unfinished if it is in blobs/<gid> (blobs.py)
    attempts     INTEGER NOT NULL DEFAULT 0,
    ok           INTEGER,            -- NULL until the job finished
    result       BLOB,               -- msgpack value or error
    finished_at  REAL,
    detached     INTEGER NOT NULL DEFAULT 0  -- its result outlives its session
);
CREATE TABLE IF NOT EXISTS failed (
    gid          INTEGER PRIMARY KEY,
    task         TEXT NOT NULL,
    body         BLOB NOT NULL,      -- msgpack [args, kwargs, error, session, size]
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
-- Submissions that joined another job by its unique key (broker/keys.py):
-- they get that job's outcome, kept here until they acknowledge it.
CREATE TABLE IF NOT EXISTS followers (
    session      TEXT NOT NULL,
    cid          INTEGER NOT NULL,
    gid          INTEGER NOT NULL,   -- the job followed
    ok           INTEGER,
    result       BLOB,
    finished_at  REAL,
    PRIMARY KEY (session, cid)
);
"""
# Columns added after the first release, added to older stores on open.
# `key` (a job's unique key) needs no SQL index: the broker never queries by
# it; it reads every row once at start-up and keeps its index in memory.
MIGRATIONS = {"jobs": [("key", "TEXT")]}


_JOB_COLUMNS = "gid, session, cid, task, body, attempts, ok, result, finished_at, detached, key"
_UNFINISHED_COLUMNS = "gid, session, cid, task, body, attempts"
_FOLLOWER_COLUMNS = "session, cid, gid, ok, result, finished_at"
# Unfinished jobs are restored this many at a time; workers get the first
# batch while the next is read.
RESTORE_BATCH_ROWS = 20_000


class DataDirBusy(Exception):
    """Another broker already uses this data directory."""


class SqliteStore(GroupCommitStore):
    def __init__(self, data_dir: Path, *, fsync: bool = False) -> None:
        """Open (or create) the store in `data_dir`.

        Raises:
            DataDirBusy: another broker holds the directory's lock.
            sqlite3.Error: the database cannot be opened.
        """
        super().__init__()
        self.path = data_dir / "broker.sqlite3"
        _make_private(data_dir, self.path)
        # Two brokers on one store would both run its jobs.
        self._lock_file = os.fdopen(os.open(data_dir / "broker.lock", os.O_WRONLY | os.O_CREAT, 0o600), "w")
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
        for table, added in MIGRATIONS.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in added:
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        # Until a job is followed, finishes skip the followers table: the
        # plain job path pays nothing for unique keys.
        self._followers_seen = self._db.execute("SELECT 1 FROM followers LIMIT 1").fetchone() is not None
        self._blobs = BlobFiles(data_dir / "blobs", fsync=fsync)
        self._blobs.sweep(self._wants_blob)

    def _wants_blob(self, gid: int) -> bool:
        """Whether job `gid`'s row says its body is its file."""
        query = "SELECT 1 FROM jobs WHERE gid = ? AND ok IS NULL AND length(body) = 0"
        return self._db.execute(query, (gid,)).fetchone() is not None

    def _with_bodies(self, job_rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        """Job rows with each body kept in a file read back into its place."""
        for row in job_rows:
            if row[6] is None and not row[4]:
                row = (*row[:4], self._blobs.read(row[0]), *row[5:])
            yield row

    def _unfinished_with_bodies(self, rows: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        """Rows of _UNFINISHED_COLUMNS, each body kept in a file read back
        into its place (an unfinished row's body is empty only then)."""
        read = self._blobs.read
        for row in rows:
            yield row if row[4] else (*row[:4], read(row[0]), row[5])

    def restore(self) -> Snapshot:
        snapshot = snapshot_from_rows(
            self._with_bodies(self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs")),
            self._db.execute("SELECT gid, task, body, attempts, finished_at FROM failed"),
            self._db.execute(f"SELECT {_FOLLOWER_COLUMNS} FROM followers"),
        )
        return snapshot._replace(**self._settings())

    def _settings(self) -> dict[str, Any]:
        """Paused queues and schedules, as Snapshot fields."""
        paused = [queue for (queue,) in self._db.execute("SELECT queue FROM paused_queues")]
        schedules = [msgpack.unpackb(body, raw=False) for (body,) in self._db.execute("SELECT body FROM schedules")]
        return {"paused": paused, "schedules": schedules}

    def restore_in_parts(self, batch_rows: int = RESTORE_BATCH_ROWS) -> Iterator[Snapshot]:
        yield snapshot_from_rows(
            self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE ok IS NOT NULL"),
            self._db.execute("SELECT gid, task, body, attempts, finished_at FROM failed"),
        )._replace(**self._settings())
        # Jobs accepted while a part is handed out cannot appear here: the
        # broker admits no client until the last part is in.
        # Only what an unfinished job needs: its key, result mode and the
        # rest of its options are in its body. (The primary key's order:
        # no sort.)
        cursor = self._db.execute(f"SELECT {_UNFINISHED_COLUMNS} FROM jobs WHERE ok IS NULL ORDER BY gid")
        while rows := cursor.fetchmany(batch_rows):
            yield Snapshot(unfinished_from_rows(self._unfinished_with_bodies(rows)), [], [])
        # Followers last: each joins a job by its id, which must be back by then.
        yield snapshot_from_rows((), (), self._db.execute(f"SELECT {_FOLLOWER_COLUMNS} FROM followers"))

    def _commit(self, journal: Journal) -> None:
        rows = rows_for(journal, finished_adds=True, followers_stored=self._followers_seen, large_pieces=True)
        db = self._db
        blobs = self._blobs
        # Most jobs have no attempts yet, no detached result and no key:
        # the columns' defaults; binding fewer values costs less (about
        # 3.3 -> 2.8 us a row). Split in the same pass that looks for
        # bodies to write as files (one walk over the rows, not two).
        plain: list[tuple[Any, ...]] = []
        full: list[tuple[Any, ...]] = []
        replaced: list[int] = []  # small bodies now in the row of a job that had a file
        new_files: list[int] = []
        held = blobs.held
        try:
            # A job finishing in this same transaction is in rows.add_finished,
            # not here, with no body: it never gets a file.
            for row in rows.add:
                body = row[4]
                # A list: the pieces of a body holding large bytes, written
                # where they lie (rows_for's large_pieces), never joined.
                if type(body) is list or len(body) >= BLOB_FILE_BYTES:
                    if blobs.write(row[0], body):
                        new_files.append(row[0])
                    row = (*row[:4], b"", *row[5:])
                elif held and row[0] in held:
                    replaced.append(row[0])
                if row[5] == 0 and row[6] == 0 and row[7] is None:
                    plain.append(row[:5])
                else:
                    full.append(row)
            # A job inserted finished replaces whatever row it had, file and all.
            if held:
                replaced += [row[0] for row in rows.add_finished if row[0] in held]
            if new_files:
                blobs.sync()
            db.execute("BEGIN")
            insert_many(db, "INSERT OR REPLACE INTO jobs (gid, session, cid, task, body) VALUES ", plain)
            insert_many(
                db, "INSERT OR REPLACE INTO jobs (gid, session, cid, task, body, attempts, detached, key) VALUES ",
                full,
            )
            # Finished already: one insert instead of an insert and an update.
            insert_many(
                db, "INSERT OR REPLACE INTO jobs (gid, session, cid, task, body, attempts, detached, key, ok, result,"
                " finished_at) VALUES ",
                rows.add_finished,
            )
            run_many(db, "UPDATE jobs SET attempts = ? WHERE gid = ?", rows.attempts)
            if rows.follow:
                self._followers_seen = True
                run_many(db, "INSERT OR REPLACE INTO followers (session, cid, gid) VALUES (?, ?, ?)", rows.follow)
            run_many(
                db, "UPDATE followers SET ok = ?, result = ?, finished_at = ? WHERE session = ? AND cid = ?",
                rows.follow_result,
            )
            # A finished job's arguments are never read again: dropping them
            # keeps the write (and the disk) small for jobs with large ones.
            if rows.finish:
                update_finished(db, rows.finish)
            if self._followers_seen:
                run_many(
                    db, "UPDATE followers SET ok = ?, result = ?, finished_at = ? WHERE gid = ? AND ok IS NULL",
                    rows.finish_followers,
                )
            run_many(db, "INSERT OR REPLACE INTO failed VALUES (?, ?, ?, ?, ?)", rows.failed)
            run_many(db, "DELETE FROM failed WHERE gid = ?", rows.unfail)
            if rows.forget:
                run_many(db, "DELETE FROM jobs WHERE gid BETWEEN ? AND ?", gid_runs(rows.forget))
            for setting in rows.settings:
                if setting[0] == "pause":
                    db.execute("INSERT OR IGNORE INTO paused_queues VALUES (?)", setting[1:])
                elif setting[0] == "unpause":
                    db.execute("DELETE FROM paused_queues WHERE queue = ?", setting[1:])
                elif setting[0] == "schedule":
                    db.execute("INSERT OR REPLACE INTO schedules VALUES (?, ?)", setting[1:])
                else:
                    db.execute("DELETE FROM schedules WHERE name = ?", setting[1:])
            run_many(db, "DELETE FROM followers WHERE session = ? AND cid = ?", rows.unfollow)
            for cutoff in rows.expire:
                db.execute("DELETE FROM jobs WHERE finished_at < ?", (cutoff,))
                db.execute("DELETE FROM failed WHERE finished_at < ?", (cutoff,))
                db.execute("DELETE FROM followers WHERE finished_at < ?", (cutoff,))
            db.execute("COMMIT")
        except Exception:  # packing a value can fail too, not only SQLite
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may have rolled back itself (a full disk does)
            # No row refers to a file this transaction created (a retry
            # writes it again); files that were there before still have theirs.
            blobs.remove(new_files)
            raise
        # Only now that no committed row needs them.
        if blobs.held:
            blobs.remove(replaced)
            blobs.remove(row[3] for row in rows.finish)
            blobs.remove(gid for (gid,) in rows.forget)

    def _disk_full(self, exc: BaseException) -> bool:
        return (
            getattr(exc, "sqlite_errorcode", None) == getattr(sqlite3, "SQLITE_FULL", 13)
            or "disk is full" in str(exc)
            or super()._disk_full(exc)
        )

    def _reclaim(self) -> None:
        """The write-ahead log only shrinks when a checkpoint truncates it,
        and on a small disk it can be most of what the store uses."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _close_backend(self) -> None:
        self._db.close()
        self._lock_file.close()


# Values bound per statement at most: the limit of SQLite builds before 3.32.
MAX_BOUND_VALUES = 999


def run_many(db: sqlite3.Connection, statement: str, rows: list[Any]) -> None:
    """`executemany`, or nothing for no rows: an `executemany` of none still
    costs its statement (about 1 us each on the real schema here), and most
    flushes lack most kinds of rows."""
    if rows:
        db.executemany(statement, rows)


def insert_many(db: sqlite3.Connection, head: str, rows: list[tuple[Any, ...]]) -> None:
    """`head` (an INSERT ending in VALUES) for every row, as many rows per
    statement as MAX_BOUND_VALUES allows instead of `executemany`'s one:
    a statement step costs the same whatever its rows, and the sqlite3
    module lets go of the GIL and takes it back around each step, which
    costs most when other threads wait for it (a busy broker's readers).
    Rows go in their order, so a later row replaces an earlier one as it
    would one by one."""
    if not rows:
        return
    width = len(rows[0])
    one = "(" + ", ".join(["?"] * width) + ")"
    for start, count in statement_runs(len(rows), MAX_BOUND_VALUES // width):
        chunk = rows[start : start + count]
        db.execute(head + ", ".join([one] * count), [value for row in chunk for value in row])


def statement_runs(rows: int, most: int) -> Iterator[tuple[int, int]]:
    """(start, count) of each statement for `rows` rows, at most `most` a
    statement, each count a power of two: the sqlite3 module keeps every
    distinct statement it prepared (128 of them), and one shape per row
    count from 1 to `most` kept about 90 MB of prepared statements in a
    broker that had run 300,000 fire-and-forget jobs (its RSS after them
    229 -> 137 MB with this); powers of two make 8 shapes."""
    top = 1 << (most.bit_length() - 1)
    start = 0
    while start < rows:
        count = min(top, 1 << ((rows - start).bit_length() - 1))
        yield start, count
        start += count


# UPDATE ... FROM: SQLite 3.33 or later.
UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)
# Results larger than this are written one statement each: UPDATE ... FROM
# first copies its VALUES into a temporary table, which for a map chunk's
# packed results (kilobytes) cost more than the statement steps it saves
# (broker CPU per map item 127-153 -> 147-187 ns, back to back).
UPDATE_FROM_MAX_RESULT_BYTES = 1024


def update_finished(db: sqlite3.Connection, rows: list[tuple[Any, ...]], many: bool | None = None) -> None:
    """Write the outcome of each (ok, result, finished_at, gid) row into its
    job's row, dropping the arguments (never read again). Many rows per
    statement (`UPDATE ... FROM (VALUES ...)`, found by primary key) where
    SQLite has it (`many`, by default UPDATE_FROM), as `insert_many` does:
    4.1 -> 1.4 us a row in a probe; one step per row on an older SQLite."""
    one_by_one = "UPDATE jobs SET ok = ?, result = ?, finished_at = ?, body = X'' WHERE gid = ?"
    if not (UPDATE_FROM if many is None else many):
        db.executemany(one_by_one, rows)
        return
    # One row per job: where several match, UPDATE ... FROM takes any one;
    # a job finishes once, but the last would win one by one.
    unique: list[tuple[Any, ...]] = []
    large: list[tuple[Any, ...]] = []  # written one by one
    for row in {row[3]: row for row in rows}.values():
        (large if len(row[1] or b"") > UPDATE_FROM_MAX_RESULT_BYTES else unique).append(row)
    db.executemany(one_by_one, large)
    for start, count in statement_runs(len(unique), MAX_BOUND_VALUES // 4):
        chunk = unique[start : start + count]
        db.execute(
            "UPDATE jobs SET ok = v.column1, result = v.column2, finished_at = v.column3, body = X''"
            " FROM (VALUES " + ", ".join(["(?, ?, ?, ?)"] * len(chunk)) + ") AS v WHERE jobs.gid = v.column4",
            [value for row in chunk for value in row],
        )


def gid_runs(rows: list[tuple[Any, ...]]) -> list[list[int]]:
    """The ids of `(gid,)` rows as runs of consecutive ids, [first, last]
    each: a client acknowledges its results in order, so a flush's deletes
    are a few ranges, one statement each, not one per job."""
    runs: list[list[int]] = []
    for gid in sorted({row[0] for row in rows}):
        if runs and gid == runs[-1][1] + 1:
            runs[-1][1] = gid
        else:
            runs.append([gid, gid])
    return runs


def _make_private(data_dir: Path, db_path: Path) -> None:
    """The data directory 0700 and the database 0600, whatever the umask:
    the files hold every queued job's arguments and every kept result.

    SQLite gives its -wal and -shm files the database file's mode, so
    creating that one private is enough for the files to come; files left
    by an older broker are made private too. Body files (blobs.py) are
    created 0600 in a directory of their own, made 0700 here too.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(db_path, os.O_RDWR | os.O_CREAT, 0o600))
    for path in [data_dir, *data_dir.iterdir()]:
        mode = 0o700 if path.is_dir() else 0o600
        if (path == data_dir or path.is_file() or path.name == "blobs") and path.stat().st_mode & 0o077:
            try:
                os.chmod(path, mode)
                log.warning("%s was accessible by other users; made it private (%04o)", path, mode)
            except OSError as exc:  # not ours (a mounted volume): say so, go on
                log.warning("%s is accessible by other users and cannot be made private: %s", path, exc)


def default_data_dir(port: int) -> Path:
    """Per user and per port: $XDG_DATA_HOME/sockpool/broker-PORT
    (~/.local/share/sockpool/broker-PORT when XDG_DATA_HOME is unset)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "sockpool" / f"broker-{port}"
