"""The broker's durable store: one small interface (base.py), backends side
by side (sqlite.py, the default; postgres.py for several brokers on one
database). The server and the state only see the interface: `restore()`,
`start()`, `write(journal, after_commit)`, `close()`."""

from .base import GroupCommitStore, Snapshot, StoreTrouble
from .sqlite import DataDirBusy, SqliteStore, default_data_dir

# The name the rest of the broker (and embedding programs) used before there
# was more than one backend.
Store = SqliteStore

__all__ = ["DataDirBusy", "GroupCommitStore", "Snapshot", "SqliteStore", "Store", "StoreTrouble", "default_data_dir"]
