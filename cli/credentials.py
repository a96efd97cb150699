"""The engineer's login on this computer: server address and API token (file mode 0600)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from agent.client import HelplineClient
from agent.paths import config_dir, write_private
from protocol.errors import ConfigError

CREDENTIALS_FILE = "credentials.json"
LOGIN_FIRST = "Run `helpline login` (add the server's URL the first time)."


@dataclass
class Login:
    server_url: str
    token: str
    username: str
    role: str
    expires_at: str


def save_login(login: Login) -> None:
    write_private(config_dir() / CREDENTIALS_FILE, json.dumps(asdict(login), indent=2).encode())


def _saved() -> dict:
    """What the credentials file holds (possibly only the server after a logout); {} if there is none."""
    path = config_dir() / CREDENTIALS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ConfigError(f"{path} is damaged.", hint="Run `helpline login URL` again.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is damaged.", hint="Run `helpline login URL` again.")
    return data


def saved_server() -> str | None:
    """The server this computer last logged in to (kept after a logout), so `helpline login` needs no URL again."""
    try:
        url = _saved().get("server_url")
    except ConfigError:  # a damaged file remembers nothing; logging in again rewrites it
        return None
    return url if isinstance(url, str) and url else None


def saved_username() -> str | None:
    """The account name of the last login here (offered as the default at the next one)."""
    try:
        name = _saved().get("username")
    except ConfigError:
        return None
    return name if isinstance(name, str) and name else None


def load_login() -> Login:
    path = config_dir() / CREDENTIALS_FILE
    try:
        data = _saved()
        if not data.get("token"):
            raise FileNotFoundError(path)
        return Login(**data)
    except FileNotFoundError as exc:
        raise ConfigError("You are not logged in.", hint=LOGIN_FIRST) from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is damaged.", hint=LOGIN_FIRST) from exc


def forget_login() -> bool:
    """Forget the token (keeping the server's address for the next `helpline login`); whether there was one."""
    path = config_dir() / CREDENTIALS_FILE
    if not path.exists():
        return False
    try:
        kept = {k: v for k, v in _saved().items() if k in ("server_url", "username") and isinstance(v, str)}
    except ConfigError:
        kept = {}
    if kept.get("server_url"):
        write_private(path, json.dumps(kept, indent=2).encode())
    else:
        path.unlink()
    return True


def connect() -> HelplineClient:
    """A client for the server this engineer logged in to, carrying their token."""
    login = load_login()
    return HelplineClient.connect(login.server_url, login.token)
