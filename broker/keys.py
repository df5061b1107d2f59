"""Unique keys: which job holds a key, so a second submit joins it.

A job submitted with the option `key` holds that key from the moment it
is accepted until its submitting session has collected its result (the
`ack`), or the result expired. Meanwhile, any submit with the same key,
from any client, makes no new job: it follows the holder and gets the same
outcome. The window is status-based rather than a TTL because that is
what makes "this job at most once" true without a clock to tune: while
the first job can still deliver its result, nobody gets a second run;
once its submitter has the result in hand, the key is free again, and a
new submit is a new, deliberate request.

The index is two dicts (key -> holder, broker id -> key); the key also
sits in the job's stored options and in a column of the job's row, which
is how it survives a restart. Pure data: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """The job holding a key, and the session and client id its result is
    stored under once it finishes."""

    gid: int
    session: str
    cid: int


class KeyIndex:
    def __init__(self) -> None:
        self._by_key: dict[str, KeyHolder] = {}
        self._by_gid: dict[int, str] = {}

    def holder(self, key: str) -> KeyHolder | None:
        return self._by_key.get(key)

    def hold(self, key: str, gid: int, session: str, cid: int) -> None:
        """`gid` holds `key` from now on (the caller checked it was free)."""
        self._by_key[key] = KeyHolder(gid, session, cid)
        self._by_gid[gid] = key

    def release(self, gid: int) -> str | None:
        """The job's result was collected (or expired, or the job is gone
        for good): its key is free. Returns the key, if it held one."""
        if not self._by_gid:
            return None  # no job holds a key: the plain path pays a test
        key = self._by_gid.pop(gid, None)
        if key is not None and self._by_key.get(key, None) is not None and self._by_key[key].gid == gid:
            del self._by_key[key]
        return key

    def key_of(self, gid: int) -> str | None:
        return self._by_gid.get(gid)

    def __len__(self) -> int:
        return len(self._by_key)
