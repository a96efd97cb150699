"""The engineer's login on this computer: server address and API token (file mode 0600)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from agent.client import HelplineClient
from agent.paths import config_dir, write_private
from protocol.errors import ConfigError

CREDENTIALS_FILE = "credentials.json"


@dataclass
class Login:
    server_url: str
    token: str
    username: str
    role: str
    expires_at: str


def save_login(login: Login) -> None:
    write_private(config_dir() / CREDENTIALS_FILE, json.dumps(asdict(login), indent=2).encode())


def load_login() -> Login:
    path = config_dir() / CREDENTIALS_FILE
    try:
        return Login(**json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise ConfigError("You are not logged in.", hint="Run `helpline login URL` first.") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is damaged.", hint="Run `helpline login URL` again.") from exc


def forget_login() -> bool:
    path = config_dir() / CREDENTIALS_FILE
    if path.exists():
        path.unlink()
        return True
    return False


def connect() -> HelplineClient:
    """A client for the server this engineer logged in to, carrying their token."""
    login = load_login()
    return HelplineClient.connect(login.server_url, login.token)
