"""The store on PostgreSQL: several brokers on one database, one active.

The same journal as SQLite (rows from rows.rows_for, group commit by the
shared writer), in tables prefixed `sockpool_` so the store can share a
database with other things. The broker creates or migrates the schema at
start, under an advisory lock so two brokers starting together do not race,
and refuses a schema newer than it knows.

Every commit proves its writer still leads: it reads the lease's epoch with
FOR SHARE in the same transaction and fails with `Fenced` if the epoch
moved on (see postgres_lease.py). A commit that fails for any reason loses
the leadership: the broker stops serving, its clients resend to whichever
broker leads next, and that one restores from here exactly as a restart.

Needs psycopg 3 (`pip install 'sockpool[postgres]'`).
"""

from __future__ import annotations

import logging
from typing import Any

import msgpack
import psycopg

from sockpool.protocol.defaults import LEASE_TTL_S

from .base import GroupCommitStore
from .rows import Journal, Snapshot, rows_for, snapshot_from_rows
from .leadership import Fenced
from .postgres_lease import PostgresLease, connect

log = logging.getLogger("sockpool.broker.store")

SCHEMA_VERSION = 4
# Any fixed number: the advisory lock that serialises migrations.
_MIGRATION_LOCK = 0x736F636B  # "sock"

# Migrations, by the version they bring the schema to.
MIGRATIONS = {
    1: """
CREATE TABLE sockpool_leader (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    epoch       BIGINT NOT NULL,
    holder      TEXT NOT NULL,
    address     TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
INSERT INTO sockpool_leader VALUES (1, 0, '', '', '-infinity');
CREATE TABLE sockpool_jobs (
    gid          BIGINT PRIMARY KEY,
    session      TEXT NOT NULL,
    cid          BIGINT NOT NULL,
    task         TEXT NOT NULL,
    body         BYTEA NOT NULL,     -- msgpack [args, kwargs, many, options]; empty once finished
    attempts     INTEGER NOT NULL DEFAULT 0,
    ok           SMALLINT,           -- NULL until the job finished
    result       BYTEA,              -- msgpack value or error
    finished_at  DOUBLE PRECISION
);
CREATE INDEX sockpool_jobs_by_time ON sockpool_jobs (finished_at);
CREATE TABLE sockpool_failed (
    gid          BIGINT PRIMARY KEY,
    task         TEXT NOT NULL,
    body         BYTEA NOT NULL,     -- msgpack [args, kwargs, error, session, size]
    attempts     INTEGER NOT NULL,
    finished_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX sockpool_failed_by_time ON sockpool_failed (finished_at);
""",
    # Detached jobs: their results outlive their sessions.
    2: """
ALTER TABLE sockpool_jobs ADD COLUMN detached SMALLINT NOT NULL DEFAULT 0;
""",
    # Unique keys (broker/keys.py): a job's key, and the submissions that
    # joined a job by its key, kept until they acknowledge its outcome.
    3: """
ALTER TABLE sockpool_jobs ADD COLUMN key TEXT;
CREATE TABLE sockpool_followers (
    session      TEXT NOT NULL,
    cid          BIGINT NOT NULL,
    gid          BIGINT NOT NULL,    -- the job followed
    ok           SMALLINT,
    result       BYTEA,
    finished_at  DOUBLE PRECISION,
    PRIMARY KEY (session, cid)
);
CREATE INDEX sockpool_followers_by_gid ON sockpool_followers (gid);
""",
    # Paused queues and cron schedules (broker/dispatch.py, broker/schedules.py).
    4: """
CREATE TABLE sockpool_paused_queues (
    queue        TEXT PRIMARY KEY
);
CREATE TABLE sockpool_schedules (
    name         TEXT PRIMARY KEY,
    body         BYTEA NOT NULL      -- msgpack Schedule.record(): definition, since, last outcome
);
""",
}

# A writer frozen inside a transaction holds the lease row's share lock;
# the server ends such a transaction so a standby can take over.
# A statement that takes this long is a database in trouble: fail the
# commit (and lose the lead) rather than wait without bound.
_WRITER_OPTIONS = (
    f"-c idle_in_transaction_session_timeout={int(LEASE_TTL_S * 1000)} -c statement_timeout=10000"
)


class SchemaTooNew(Exception):
    """The database was set up by a newer sockpool."""


class PostgresStore(GroupCommitStore):
    def __init__(self, url: str) -> None:
        """Connect, create or migrate the schema.

        Raises:
            psycopg.Error: the database cannot be reached or set up.
            SchemaTooNew: a newer sockpool's schema is there.
        """
        super().__init__()
        self.url = url
        self.leadership: PostgresLease = PostgresLease(url)
        with connect(url, autocommit=False) as conn:
            migrate(conn)
        self._db: psycopg.Connection[Any] | None = None

    def restore(self) -> Snapshot:
        self._close_writer()  # the writer thread is not running: start() follows
        self._db = connect(self.url, _WRITER_OPTIONS)
        with self._db.transaction():
            # One snapshot of both tables: REPEATABLE READ.
            self._db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            jobs = self._db.execute(
                "SELECT gid, session, cid, task, body, attempts, ok, result, finished_at, detached, key"
                " FROM sockpool_jobs"
            ).fetchall()
            failed = self._db.execute("SELECT gid, task, body, attempts, finished_at FROM sockpool_failed").fetchall()
            followers = self._db.execute(
                "SELECT session, cid, gid, ok, result, finished_at FROM sockpool_followers"
            ).fetchall()
            paused = [queue for (queue,) in self._db.execute("SELECT queue FROM sockpool_paused_queues")]
            schedules = [
                msgpack.unpackb(bytes(body), raw=False)
                for (body,) in self._db.execute("SELECT body FROM sockpool_schedules")
            ]
        return snapshot_from_rows(jobs, failed, followers)._replace(paused=paused, schedules=schedules)

    def _commit(self, journal: Journal) -> None:
        lead = self.leadership
        epoch = lead.epoch
        if not lead.valid():
            raise Fenced(f"not the active broker (epoch {epoch}): nothing more is written")
        db = self._db
        assert db is not None, "restore() opens the writer's connection"
        rows = rows_for(journal)
        with db.transaction(), db.cursor() as cur:
            row = cur.execute("SELECT epoch FROM sockpool_leader WHERE id = 1 FOR SHARE").fetchone()
            if row is None or row[0] != epoch:
                raise Fenced(f"fenced: the store is at epoch {row[0] if row else '?'}, ours is {epoch}")
            if rows.add:
                cur.executemany(
                    "INSERT INTO sockpool_jobs (gid, session, cid, task, body, attempts, detached, key)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (gid) DO UPDATE SET session = EXCLUDED.session, cid = EXCLUDED.cid,"
                    " task = EXCLUDED.task, body = EXCLUDED.body, attempts = EXCLUDED.attempts,"
                    " detached = EXCLUDED.detached, key = EXCLUDED.key, ok = NULL, result = NULL, finished_at = NULL",
                    rows.add,
                )
            if rows.attempts:
                cur.executemany("UPDATE sockpool_jobs SET attempts = %s WHERE gid = %s", rows.attempts)
            if rows.follow:
                cur.executemany(
                    "INSERT INTO sockpool_followers (session, cid, gid) VALUES (%s, %s, %s) ON CONFLICT"
                    " (session, cid) DO UPDATE SET gid = EXCLUDED.gid, ok = NULL, result = NULL, finished_at = NULL",
                    rows.follow,
                )
            if rows.follow_result:
                cur.executemany(
                    "UPDATE sockpool_followers SET ok = %s, result = %s, finished_at = %s WHERE session = %s AND cid = %s",
                    rows.follow_result,
                )
            if rows.finish:
                cur.executemany(
                    # A finished job's arguments are never read again.
                    "UPDATE sockpool_jobs SET ok = %s, result = %s, finished_at = %s, body = ''::bytea WHERE gid = %s",
                    rows.finish,
                )
            if rows.finish_followers:
                # Indexed by gid: cheap when nobody follows.
                cur.executemany(
                    "UPDATE sockpool_followers SET ok = %s, result = %s, finished_at = %s WHERE gid = %s AND ok IS NULL",
                    rows.finish_followers,
                )
            if rows.failed:
                cur.executemany(
                    "INSERT INTO sockpool_failed VALUES (%s, %s, %s, %s, %s) ON CONFLICT (gid) DO UPDATE SET"
                    " task = EXCLUDED.task, body = EXCLUDED.body, attempts = EXCLUDED.attempts,"
                    " finished_at = EXCLUDED.finished_at",
                    rows.failed,
                )
            if rows.unfail:
                cur.execute("DELETE FROM sockpool_failed WHERE gid = ANY(%s)", ([gid for (gid,) in rows.unfail],))
            if rows.forget:
                cur.execute("DELETE FROM sockpool_jobs WHERE gid = ANY(%s)", ([gid for (gid,) in rows.forget],))
            if rows.unfollow:
                cur.executemany("DELETE FROM sockpool_followers WHERE session = %s AND cid = %s", rows.unfollow)
            for setting in rows.settings:  # in journal order: an add then a remove stays removed
                if setting[0] == "pause":
                    cur.execute("INSERT INTO sockpool_paused_queues VALUES (%s) ON CONFLICT DO NOTHING", setting[1:])
                elif setting[0] == "unpause":
                    cur.execute("DELETE FROM sockpool_paused_queues WHERE queue = %s", setting[1:])
                elif setting[0] == "schedule":
                    cur.execute(
                        "INSERT INTO sockpool_schedules VALUES (%s, %s)"
                        " ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body",
                        setting[1:],
                    )
                else:
                    cur.execute("DELETE FROM sockpool_schedules WHERE name = %s", setting[1:])
            for cutoff in rows.expire:
                cur.execute("DELETE FROM sockpool_jobs WHERE finished_at < %s", (cutoff,))
                cur.execute("DELETE FROM sockpool_failed WHERE finished_at < %s", (cutoff,))
                cur.execute("DELETE FROM sockpool_followers WHERE finished_at < %s", (cutoff,))

    def _disk_full(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.DiskFull)

    def _write_failed(self, exc: Exception) -> None:
        # Whatever went wrong, this broker cannot promise durability any
        # more; the next leader (perhaps us again) starts from the store.
        self.leadership.lose(f"store write failed: {str(exc).strip() or type(exc).__name__}")

    def _abandon_backend(self) -> None:
        self._close_writer()

    def _close_writer(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except Exception:
                pass
            self._db = None

    def _close_backend(self) -> None:
        self._close_writer()
        self.leadership.release()


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Bring the schema to SCHEMA_VERSION; the version it is at now.

    Raises:
        SchemaTooNew: the database's version is newer than ours.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS sockpool_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM sockpool_schema").fetchone()
        version = row[0] if row else 0
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the database's sockpool schema is version {version}; this broker knows up to "
                f"{SCHEMA_VERSION}: upgrade sockpool"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute(MIGRATIONS[target])
            log.info("store schema migrated to version %d", target)
        if row is None:
            conn.execute("INSERT INTO sockpool_schema VALUES (%s)", (SCHEMA_VERSION,))
        elif version != SCHEMA_VERSION:
            conn.execute("UPDATE sockpool_schema SET version = %s", (SCHEMA_VERSION,))
    return SCHEMA_VERSION
