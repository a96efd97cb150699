"""Used session grants, remembered across restarts so that each grant opens one session only.

The store is a small JSON file (0600) in a directory the caller owns; an entry is
kept until its grant has expired (plus the clock-skew allowance), after which the
grant could not be accepted anyway, so the file stays small.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from agent.once import OnceRecord
from protocol.grants import SessionGrant

USED_GRANTS_FILE = "used-grants.json"


class UsedGrants:
    """The grant ids and nonces this PC has already accepted, persisted in ``directory``."""

    def __init__(self, directory: Path, *, skew: timedelta = timedelta(seconds=60)):
        self.path = Path(directory) / USED_GRANTS_FILE
        self.skew = skew
        self._record = OnceRecord(self.path, id_key="grants", skew=skew,
                                  replayed="This session grant was used already; ask for a new session.",
                                  unreadable_hint="Remove it only if no session is live.")

    def was_used(self, grant: SessionGrant) -> bool:
        """True if this grant's id or nonce was claimed before."""
        return self._record.seen(grant.grant_id, grant.nonce)

    def claim(self, grant: SessionGrant, *, now: datetime) -> None:
        """Record ``grant`` as used; raise AuthError if its id or nonce was used already."""
        self._record.claim(grant.grant_id, grant.nonce, until=grant.expires_at, now=now)

    def __len__(self) -> int:
        return len(self._record)
