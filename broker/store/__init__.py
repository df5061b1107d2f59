"""The broker's durable store: one small interface (base.py), backends side
by side (sqlite.py, the default; postgres.py for several brokers on one
database). The server and the state only see the interface: `restore()`,
`start()`, `write(journal, after_commit)`, `close()`."""

from .base import GroupCommitStore, StoreTrouble
from .rows import Snapshot
from .leadership import Fenced, Leadership, SoleLeadership
from .sqlite import DataDirBusy, SqliteStore, default_data_dir

# The name the rest of the broker (and embedding programs) used before there
# was more than one backend.
Store = SqliteStore



def open_postgres(url: str) -> GroupCommitStore:
    """The PostgreSQL store at `url` (postgresql://...), schema created or migrated.

    Raises:
        ImportError: psycopg is not installed (pip install 'sockpool[postgres]').
        psycopg.Error: the database cannot be reached or set up.
    """
    from .postgres import PostgresStore  # psycopg is an optional extra

    return PostgresStore(url)


__all__ = [
    "DataDirBusy", "Fenced", "GroupCommitStore", "Leadership", "Snapshot", "SoleLeadership", "SqliteStore",
    "Store", "StoreTrouble", "default_data_dir", "open_postgres",
]
