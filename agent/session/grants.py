"""Used session grants, remembered across restarts so that each grant opens one session only.

The store is a small JSON file (0600) in a directory the caller owns; an entry is
kept until its grant has expired (plus the clock-skew allowance), after which the
grant could not be accepted anyway, so the file stays small.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta
from pathlib import Path

from protocol.errors import AuthError, ConfigError
from protocol.grants import SessionGrant

USED_GRANTS_FILE = "used-grants.json"


class UsedGrants:
    """The grant ids and nonces this PC has already accepted, persisted in ``directory``."""

    def __init__(self, directory: Path, *, skew: timedelta = timedelta(seconds=60)):
        self.path = Path(directory) / USED_GRANTS_FILE
        self.skew = skew
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"grants": {}, "nonces": {}}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"The used-grants file {self.path} is unreadable; remove it only if no session is live.") from exc
        if not isinstance(data, dict) or not isinstance(data.get("grants"), dict) or not isinstance(data.get("nonces"), dict):
            raise ConfigError(f"The used-grants file {self.path} is not in the expected form.")
        return data

    def _save(self, data: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def _pruned(self, data: dict[str, dict[str, str]], now: datetime) -> dict[str, dict[str, str]]:
        def live(until: str) -> bool:
            return datetime.fromisoformat(until) + self.skew > now

        return {kind: {key: until for key, until in data[kind].items() if live(until)} for kind in ("grants", "nonces")}

    def was_used(self, grant: SessionGrant) -> bool:
        """True if this grant's id or nonce was claimed before."""
        with self._lock:
            data = self._load()
        return grant.grant_id in data["grants"] or grant.nonce in data["nonces"]

    def claim(self, grant: SessionGrant, *, now: datetime) -> None:
        """Record ``grant`` as used; raise AuthError if its id or nonce was used already."""
        with self._lock:
            data = self._pruned(self._load(), now)
            if grant.grant_id in data["grants"] or grant.nonce in data["nonces"]:
                raise AuthError("This session grant was used already; ask for a new session.")
            until = grant.expires_at.isoformat()
            data["grants"][grant.grant_id] = until
            data["nonces"][grant.nonce] = until
            self._save(data)

    def __len__(self) -> int:
        with self._lock:
            return len(self._load()["grants"])
