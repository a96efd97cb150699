"""Local set-up commands that work on the server's own files, never over the network."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select

from protocol import signing
from protocol.schemas import AccountCreate, Role
from protocol.errors import ConflictError, InvalidInputError
from server.accounts import create_account
from server.audit import Actor
from server.db import create_db_engine, session_factory, transaction
from server.migrate import upgrade
from server.models import Account
from server.security import new_secret_key
from server.settings import CONFIG_FILE_NAME, ServerSettings, load_settings


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, data_dir: Path, database_url: str | None, extra: dict[str, str] | None = None) -> None:
    """Write a new server.toml (0600) with a freshly generated secret key."""
    lines = [
        "# Helpline server settings. Environment variables HELPLINE_<NAME> override these.",
        f"data_dir = {_toml_str(str(data_dir))}",
        f"secret_key = {_toml_str(new_secret_key())}",
    ]
    if database_url:
        lines.append(f"database_url = {_toml_str(database_url)}")
    for key, value in (extra or {}).items():
        lines.append(f"{key} = {_toml_str(value)}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def init_server(
    data_dir: Path, *, database_url: str | None = None, admin_username: str | None = None,
    admin_password: str | None = None, config_path: Path | None = None,
) -> tuple[ServerSettings, Path, bool]:
    """Create (or reuse) the config, bring the schema up to date, make the signing key,
    and create the first admin account if asked.

    Return (settings, config path, whether a config file was created). Raise
    ConflictError if the admin account already exists.
    """
    config_path = config_path or data_dir / CONFIG_FILE_NAME
    created = False
    if not config_path.exists():
        write_config(config_path, data_dir, database_url)
        created = True
    settings = load_settings(config_path)
    settings.refuse_insecure_defaults()
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_db_engine(settings.resolved_database_url)
    try:
        upgrade(engine)
        signing.load_or_create_private_key(settings.resolved_signing_key_file)
        if admin_username:
            with transaction(session_factory(engine)) as session:
                if session.scalar(select(Account.id).where(Account.username == admin_username.lower())):
                    raise ConflictError(f"The account '{admin_username}' already exists.",
                                        hint="Log in with it, or pick another name.")
                try:
                    data = AccountCreate(username=admin_username.lower(), password=admin_password or "", role=Role.ADMIN)
                except ValidationError as exc:
                    raise InvalidInputError(
                        "The admin username must be 2-63 lowercase letters, digits, '.', '_' or '-', "
                        "and the password at least 12 characters."
                    ) from exc
                create_account(session, Actor.system("server init"), data)
    finally:
        engine.dispose()
    return settings, config_path, created
