"""A record of what this PC accepted once (a session grant, an engineer's request), kept across restarts.

Each entry is an id and a nonce with the time until which it could still be
accepted; entries are pruned after that time (plus the clock-skew allowance), as
nothing expired can be accepted anyway, so the file (0600, written atomically)
stays small. An unreadable record refuses everything: a lost record could let a
replay run.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from pathlib import Path

from agent.paths import write_private
from protocol.errors import AuthError, ConfigError


class OnceRecord:
    """Ids and nonces accepted once, in the JSON file ``path`` under the keys ``id_key`` and "nonces"."""

    def __init__(self, path: Path, *, id_key: str, skew: timedelta, replayed: str, unreadable_hint: str):
        self.path = Path(path)
        self.id_key = id_key
        self.skew = skew
        self.replayed = replayed  # the AuthError message for something accepted before
        self.unreadable_hint = unreadable_hint
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {self.id_key: {}, "nonces": {}}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"The record {self.path} is unreadable.", hint=self.unreadable_hint) from exc
        if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in (self.id_key, "nonces")):
            raise ConfigError(f"The record {self.path} is not in the expected form.", hint=self.unreadable_hint)
        return data

    def seen(self, entry_id: str, nonce: str | None = None) -> bool:
        """True if ``entry_id`` (or ``nonce``) was accepted before."""
        with self._lock:
            data = self._load()
        return entry_id in data[self.id_key] or (nonce is not None and nonce in data["nonces"])

    def claim(self, entry_id: str, nonce: str, *, until: datetime, now: datetime) -> None:
        """Record ``entry_id`` and ``nonce`` as accepted until ``until``; AuthError if either was accepted before."""
        with self._lock:
            data = self._load()
            live = {kind: {key: end for key, end in data[kind].items() if datetime.fromisoformat(end) + self.skew > now}
                    for kind in (self.id_key, "nonces")}
            if entry_id in live[self.id_key] or nonce in live["nonces"]:
                raise AuthError(self.replayed)
            live[self.id_key][entry_id] = until.isoformat()
            live["nonces"][nonce] = until.isoformat()
            write_private(self.path, json.dumps(live, sort_keys=True).encode())

    def __len__(self) -> int:
        with self._lock:
            return len(self._load()[self.id_key])
