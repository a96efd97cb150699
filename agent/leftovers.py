"""Folders a process of Helpline's leaves behind when it is killed or crashes.

A share's work folder and a restore's staging folder are named ``<prefix><pid>-<random>``:
whether the process that made one still runs can be told from its name, so the next
run removes what no run will finish. Names without a pid (an older Helpline's) go once
they have not changed for a while.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from agent.execute import process_exists


def owned_name(prefix: str) -> str:
    """The start of a new folder's name for this process: ``<prefix><pid>-``."""
    return f"{prefix}{os.getpid()}-"


def stale_folders(root: Path, prefix: str, *, unowned_seconds: float, now: float | None = None) -> list[Path]:
    """The folders in ``root`` named ``<prefix>…`` that no running process will finish.

    A folder is stale when the process its name gives is gone, or, for a name without
    one, when it has not changed for ``unowned_seconds``. Only folders (never links) of
    this process's user are considered, and never one of this process or of another
    that runs.
    """
    now = time.time() if now is None else now
    owned = re.compile(re.escape(prefix) + r"(\d{1,10})-")
    me = os.geteuid() if hasattr(os, "geteuid") else None
    stale: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return stale
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
            if me is not None and info.st_uid != me:
                continue  # another user's: theirs to remove
            pid = owned.match(entry.name)
            if pid is not None:
                number = int(pid.group(1))
                if number == os.getpid() or process_exists(number):
                    continue
            elif now - info.st_mtime < unowned_seconds:
                continue
        except OSError:
            continue
        stale.append(Path(entry.path))
    return stale
