"""The homes of the PC's users, which the agent service snapshots: the policy's paths resolved per user.

A policy says what to keep in terms of "~" (the default is the home itself).
A user's own agent reads "~" as their home; the service, which runs as root,
reads it as every user's home: a policy path inside the service's own home
becomes the same path inside each user's home. Paths elsewhere stay as they
are. Users are the accounts of people: a uid in the range the system gives to
people (``UID_MIN``..``UID_MAX`` of /etc/login.defs, 1000..60000 by default),
a login shell, and a home folder that exists and is theirs.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.snapshots.policy import SnapshotPolicy
from agent.store import AgentStore

from .wire import is_installed_service

if TYPE_CHECKING:
    from agent.snapshots.jobs import Snapshots

LOGIN_DEFS = Path("/etc/login.defs")
NO_LOGIN_SHELLS = frozenset({"/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false", ""})


def uid_range(login_defs: Path = LOGIN_DEFS) -> tuple[int, int]:
    """The uids given to people on this system (UID_MIN, UID_MAX), 1000..60000 unless login.defs says otherwise."""
    found = {"UID_MIN": 1000, "UID_MAX": 60000}
    try:
        text = login_defs.read_text(errors="replace")
    except OSError:
        return found["UID_MIN"], found["UID_MAX"]
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in found and parts[1].isdigit():
            found[parts[0]] = int(parts[1])
    return found["UID_MIN"], found["UID_MAX"]


def user_homes(entries: Iterable | None = None, *, uids: tuple[int, int] | None = None) -> list[Path]:
    """The homes of the PC's people, sorted: existing folders owned by their user (never a shared or missing one).
    ``entries`` are pwd entries (default: the system's)."""
    import pwd  # POSIX only; the installed service on Windows reads profiles another way (not built)

    low, high = uids or uid_range()
    homes = set()
    for entry in entries if entries is not None else pwd.getpwall():
        if not low <= entry.pw_uid <= high or entry.pw_shell in NO_LOGIN_SHELLS:
            continue
        home = Path(entry.pw_dir)
        try:
            info = os.stat(home)
        except OSError:
            continue
        if home.is_absolute() and stat.S_ISDIR(info.st_mode) and info.st_uid == entry.pw_uid:
            homes.add(home)
    return sorted(homes)


def per_user(policy: SnapshotPolicy, *, own_home: Path, homes: Iterable[Path]) -> SnapshotPolicy:
    """``policy`` with each path inside ``own_home`` (what "~" meant when it was read) made one per user's home."""
    homes = list(homes)
    if not homes:  # no people's homes on this PC: the policy stays as it was read
        return policy
    paths: list[Path] = []
    for path in policy.paths:
        try:
            below = Path(path).relative_to(own_home)
        except ValueError:
            paths.append(Path(path))
            continue
        paths.extend(home / below for home in homes)
    unique = list(dict.fromkeys(paths))
    return dataclasses.replace(policy, paths=tuple(unique))


def service_snapshots(store: AgentStore) -> Snapshots:
    """The snapshot work of the agent service on ``store``: where it is the PC's installed service (root, on the
    PC's own state), the policy's home paths are every user's home; anywhere else, the policy as read."""
    from agent.snapshots.jobs import Snapshots
    from agent.snapshots.policy import load_policy

    if not is_installed_service():
        return Snapshots(store)
    policy = load_policy(data_dir=store.directory)
    return Snapshots(store, policy=per_user(policy, own_home=Path.home(), homes=user_homes()))
