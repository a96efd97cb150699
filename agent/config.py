"""The agent's admin-set configuration: what diagnostics to gather beyond the defaults.

Read from ``/etc/helpline/agent.toml`` (deployed fleet-wide), then the user's
``agent.toml`` in the config directory, then HELPLINE_AGENT_CONFIG if set; later
files override earlier ones key by key. Example::

    [diagnostics]
    reachability_hosts = ["mail.example.com:443", "fileserver.example.com:445"]
    log_globs = ["/var/log/myapp/*.log", "~/.local/share/MyApp/logs/*.log"]
    log_since_hours = 12
    [diagnostics.app_versions]
    myapp = ["myapp", "--version"]
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from agent.paths import config_dir
from protocol.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/helpline/agent.toml")


def config_files() -> list[Path]:
    files = [SYSTEM_CONFIG, config_dir() / "agent.toml"]
    env = os.environ.get("HELPLINE_AGENT_CONFIG")
    if env:
        files.append(Path(env))
    return files


def load_agent_config() -> dict[str, Any]:
    """Merge the agent configuration files that exist; raise ConfigError for a broken one."""
    merged: dict[str, Any] = {}
    for path in config_files():
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            continue
        except PermissionError:
            continue  # a file the admin keeps private does not stop a user's share
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"The agent configuration {path} is not valid TOML: {exc}.") from exc
        for section, values in data.items():
            if isinstance(values, dict) and isinstance(merged.get(section), dict):
                merged[section] = {**merged[section], **values}
            else:
                merged[section] = values
    return merged
