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
    [server]
    proxy = "http://proxy.example.com:3128"   # else the system's HTTPS_PROXY / HTTP_PROXY / NO_PROXY
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


def configured_proxy() -> str | None:
    """The HTTP(S) proxy the admin set for reaching the server (``[server] proxy``), or None to follow the
    system's proxy variables; raise ConfigError for a value that is not an http:// or https:// proxy URL."""
    from urllib.parse import urlsplit

    value = load_agent_config().get("server", {})
    value = value.get("proxy") if isinstance(value, dict) else None
    if value is None or value == "":
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"The agent configuration's [server] proxy {str(value)[:100]!r} is not a proxy address.",
                          hint='Give it like proxy = "http://proxy.example.com:3128".')
    return value
