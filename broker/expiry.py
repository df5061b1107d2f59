"""What the broker forgets with time: failed jobs and results past their TTL,
sessions idle long after their client left, and the results of sessions
whose client stayed away past the grace (detached results excepted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .state import BrokerState

# Sessions with nothing left to deliver are forgotten this long after their
# client went away.
IDLE_SESSION_TTL_S = 600.0


def sweep(state: BrokerState, now: float) -> None:
    cutoff = now - state.result_ttl_s
    while state.failed and state.failed[0].finished_at < cutoff:
        state.failed.popleft()
    for session_id, session in list(state.sessions.items()):
        expired = [cid for cid, r in session.results.items() if r.finished_at < cutoff]
        for cid in expired:
            state.keys.release(session.results.pop(cid).gid)
        idle = session.conn_id is None and not session.live and not session.results
        if idle and session.gone_since is not None and now - session.gone_since > IDLE_SESSION_TTL_S:
            del state.sessions[session_id]
    state.journal.append(("expire", cutoff))


def abandon_gone_sessions(state: BrokerState, now: float) -> None:
    """Sessions whose client has been gone past the grace cannot come
    back for their results: drop those not detached, and keep no more."""
    limit = now - state.session_grace_s
    for session in state.sessions.values():
        if session.abandoned or session.conn_id is not None or session.gone_since is None:
            continue
        if session.gone_since > limit:
            continue
        session.abandoned = True
        dropped = [cid for cid, r in session.results.items() if not r.detached]
        forget = []
        for cid in dropped:
            result = session.results.pop(cid)
            if result.follower:  # a copy of another session's job: that job's row stays
                state.journal.append(("unfollow", session.session_id, cid))
            else:
                forget.append(result.gid)
                state.keys.release(result.gid)
        if forget:
            state.journal.append(("forget", forget))
