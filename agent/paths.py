"""Where Helpline keeps its files on a PC: the user's config and the agent's state."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def config_dir() -> Path:
    """The CLI's per-user config (engineer login), overridable by HELPLINE_CONFIG_DIR."""
    env = os.environ.get("HELPLINE_CONFIG_DIR")
    return Path(env) if env else Path(platformdirs.user_config_dir("helpline", appauthor=False))


def agent_dir() -> Path:
    """The agent's key, credential and pinned server key, overridable by HELPLINE_AGENT_DIR."""
    env = os.environ.get("HELPLINE_AGENT_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("helpline", appauthor=False)) / "agent"


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically to a file readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
