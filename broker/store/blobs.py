"""Large job bodies as files beside the SQLite database, one file per job.

SQLite copies a large value several times: into overflow pages, into the
write-ahead log, and again into the database at checkpoint; the same
bytes written as one file cost about a tenth of the CPU (measured in
bench/README.md, "Large values"). So the SQLite store keeps a body of
`BLOB_FILE_BYTES` or more in `blobs/<gid>`, and its row holds an empty body.

The rules that keep a row and its file from ever disagreeing after a
kill -9 at any point:

- A body is written to `<gid>.part` and renamed to `<gid>` (atomic)
  before the transaction holding its row commits; with `fsync`, the file
  and the directory are synced before that commit too. So a committed
  row never lacks its file, and a file under its final name is never torn.
- An unfinished row (`ok IS NULL`) with an empty body means "the body is
  the file": no real body is empty (it is msgpack of a 4-item list).
- A file is removed only after the transaction that finished, replaced or
  deleted its row has committed.
- On open, `.part` files go, and so does any file whose row is not an
  unfinished job with an empty body (a crash between rename and commit,
  or between commit and removal). The sweep costs one lookup per file on
  disk, not a scan of the table.

The PostgreSQL store keeps bodies in its rows: a database shared by
several brokers has no directory beside it that all of them see.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterable

log = logging.getLogger("sockpool.broker.store")

# A job body this large goes to a file of its own (the size from which
# frames write bytes values where they lie, protocol/splice.py).
BLOB_FILE_BYTES = 1 << 16
_PART = ".part"
# Pieces given to one writev (the kernel takes at most IOV_MAX, 1024 on Linux).
_IOV_MAX = 512


class BlobMissing(Exception):
    """An unfinished job's row says its body is a file, and there is none."""


class BlobFiles:
    """The `blobs/` directory: which jobs have a body file, and the files."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        path.mkdir(mode=0o700, exist_ok=True)
        self.path = path
        self.fsync = fsync
        # Jobs with a file under their final name. Kept in memory so that
        # finishing a small job costs no system call.
        self.held: set[int] = set()
        for entry in os.scandir(path):
            if entry.name.endswith(_PART):
                _unlink(Path(entry.path))
            elif entry.name.isdigit():
                self.held.add(int(entry.name))

    def write(self, gid: int, body: bytes | list[bytes]) -> bool:
        """Put `body` in the file of job `gid` (replacing any); True if the
        job had no file before. Call before the row's transaction commits.

        `body` may be the pieces of the packed body in order (what
        `splice.pack_pieces` returns): they are written with writev, each
        from where it lies, so the body is never joined into one bytes
        object (a 1 MiB copy into freshly faulted pages, then freed)."""
        part = self.path / f"{gid}{_PART}"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            try:
                write_all(fd, [body] if isinstance(body, bytes) else body)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(part, self.path / str(gid))
        except BaseException:  # a full disk: the half-written part goes now, not at the next open
            _unlink(part)
            raise
        new = gid not in self.held
        self.held.add(gid)
        return new

    def sync(self) -> None:
        """With `fsync`: make the renames durable before the commit."""
        if not self.fsync:
            return
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, gid: int) -> bytes:
        try:
            return (self.path / str(gid)).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(f"job {gid}'s arguments should be in {self.path / str(gid)}, which is gone") from None

    def remove(self, gids: Iterable[int]) -> None:
        """Remove the files of `gids` that have one; others cost nothing."""
        held = self.held
        for gid in gids:
            if gid in held:
                held.discard(gid)
                _unlink(self.path / str(gid))

    def sweep(self, wanted: Callable[[int], bool]) -> None:
        """Remove every file whose job `wanted(gid)` says has no use for it."""
        orphans = [gid for gid in self.held if not wanted(gid)]
        if orphans:
            log.info("removing %d body file(s) left by an interrupted write or finish", len(orphans))
            self.remove(orphans)


def write_all(fd: int, pieces: list[bytes], writev: Callable[[int, list[memoryview]], int] = os.writev) -> None:
    """Write every piece, in order: writev takes up to _IOV_MAX at a time
    and may write less than asked (a full disk raises instead)."""
    views = [memoryview(piece) for piece in pieces if len(piece)]
    first = 0  # views before this one are written
    while first < len(views):
        written = writev(fd, views[first : first + _IOV_MAX])
        # Past what was written: whole pieces, then into the next one.
        while first < len(views) and written >= len(views[first]):
            written -= len(views[first])
            first += 1
        if written:
            views[first] = views[first][written:]


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
