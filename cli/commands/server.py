"""`helpline server`: set up, migrate and run the pairing server on this machine.

The server is an optional extra (`pip install 'helpline[server]'`), so its
modules are imported only when one of these commands runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cli import output
from cli.commands.engineer import read_secret
from protocol.errors import ConfigError

server_app = typer.Typer(help="Run the Helpline server on this machine (needs the \\[server] extra).", no_args_is_help=True)

DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", metavar="DIR", envvar="HELPLINE_DATA_DIR", help="Where the server keeps its database, blobs and keys.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", metavar="FILE", envvar="HELPLINE_CONFIG", help="The server.toml to read (default: DATA_DIR/server.toml).")]


def _require_server():
    try:
        import server.app  # noqa: F401
    except ImportError as exc:
        raise ConfigError("The Helpline server is not installed here.", hint="Install it with: pip install 'helpline[server]'.") from exc


def _config_path(config: Path | None, data_dir: Path | None) -> Path | None:
    from server.settings import default_config_path

    path = config or default_config_path(data_dir)
    return path if path.exists() or config else None


@server_app.command("init")
def init(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    admin: Annotated[str | None, typer.Option("--admin", metavar="USER", help="Create this first admin account.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the admin's password from standard input.")] = False,
    database_url: Annotated[str | None, typer.Option("--database-url", metavar="URL", help="PostgreSQL URL (default: a SQLite file in the data directory).")] = None,
) -> None:
    """Set up a server: config with a fresh secret, database schema, signing key, first admin.

    Works on the server's own files only; there is no set-up page on the network.

    Example: echo "$PW" | helpline server init --data-dir /var/lib/helpline --admin root-admin --password-stdin
    """
    _require_server()
    from server.provision import init_server

    data_dir = data_dir or Path("/var/lib/helpline")
    password = read_secret("Password for the admin account: ", password_stdin) if admin else None
    settings, path, created = init_server(data_dir, database_url=database_url, admin_username=admin, admin_password=password, config_path=config)
    from protocol import signing

    key = signing.load_private_key(settings.resolved_signing_key_file)
    output.say(("Wrote" if created else "Kept") + f" {output.esc(path)}")
    output.say(f"Database ready: {output.esc(settings.resolved_database_url.split('@')[-1])}")
    output.say(f"Server key fingerprint (agents pin it): {signing.fingerprint(signing.public_key_b64(key))}")
    if admin:
        output.say(f"Created admin account [bold]{admin.lower()}[/].")


@server_app.command("migrate")
def migrate(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Bring the database schema up to date (run before starting a new version).

    Example: helpline server migrate --data-dir /var/lib/helpline
    """
    _require_server()
    from server.db import create_db_engine
    from server.migrate import upgrade
    from server.settings import load_settings

    settings = load_settings(_config_path(config, data_dir), data_dir=data_dir)
    engine = create_db_engine(settings.resolved_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    output.say("The database schema is up to date.")


@server_app.command("run")
def run(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option("--host", metavar="ADDRESS", help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", metavar="PORT", help="Port to listen on (default 8700).")] = None,
    dev: Annotated[bool, typer.Option("--dev", help="Development mode: allow the default secret.")] = False,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request.")] = True,
) -> None:
    """Run the server on uvicorn; stops cleanly on Ctrl-C or SIGTERM.

    Example: helpline server run --data-dir /var/lib/helpline --host 0.0.0.0 --port 8700
    """
    _require_server()
    from server.serve import serve
    from server.settings import load_settings

    settings = load_settings(_config_path(config, data_dir), data_dir=data_dir, host=host, port=port, dev=dev or None)
    serve(settings, access_log=access_log, announce=lambda line: print(line, file=sys.stderr, flush=True))


@server_app.command("rotate-key")
def rotate_key(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    over_api: Annotated[bool, typer.Option("--over-api", help="Rotate on the server you are logged in to (admins), not in this machine's files.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new and the retired key and the hand-over as JSON.")] = False,
) -> None:
    """Replace the server's signing key; agents follow a hand-over signed by the old key, without enrolling again.

    The old key is kept (retired) so escrowed passwords still open; a running
    server signs with the new key from its next answer. PCs offline for longer
    than \\[keys] handover_days must pair or enroll again.

    Example: helpline server rotate-key --data-dir /var/lib/helpline
    """
    from datetime import UTC, datetime

    if over_api:
        from cli.credentials import connect

        with connect() as client:
            done = client.rotate_server_key()
    else:
        _require_server()
        from server.keys import rotate_local
        from server.settings import load_settings

        settings = load_settings(_config_path(config, data_dir), data_dir=data_dir)
        done = rotate_local(settings, now=datetime.now(UTC))
    if as_json:
        output.print_json(done.model_dump(mode="json"))
        return
    output.say(f"The server signs with a new key: {done.fingerprint}")
    output.say(f"Retired (kept to open what it sealed): {done.previous_fingerprint}")
    output.say(f"Agents follow the hand-over on their next contact until {output.full_time(done.handover.not_after)}.")


@server_app.command("backup")
def backup(
    to: Annotated[Path, typer.Option("--to", metavar="FILE", help="The backup file to write (mode 0600; never overwritten).")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was backed up as JSON.")] = False,
) -> None:
    """Back the server up into one file: database, blobs, signing keys and config, with a manifest of hashes.

    The file holds every secret of the server (its signing keys, the secret
    key, the sealed snapshot passwords with the key that opens them): keep it
    as safe as the server itself. Runs while the server serves.

    Example: helpline server backup --data-dir /var/lib/helpline --to /backup/helpline-$(date +%F).tar
    """
    _require_server()
    from datetime import UTC, datetime

    from server.backup import create_backup
    from server.settings import load_settings

    path = _config_path(config, data_dir)
    settings = load_settings(path, data_dir=data_dir)
    done = create_backup(settings, to, now=datetime.now(UTC), config_path=path,
                         progress=lambda line: None if as_json else output.say(f"[dim]{output.esc(line)}…[/]"))
    if as_json:
        output.print_json({"path": str(done.path), "database": done.database, "blobs": done.blobs,
                           "blob_bytes": done.blob_bytes, "size": done.size})
        return
    output.say(f"Backed up the {done.database} database, {done.blobs} blobs ({output.size(done.blob_bytes)}) and the "
               f"keys into {output.esc(done.path)} ({output.size(done.size)}).")
    output.say("It holds the server's secrets: keep it as safe as the server.")


@server_app.command("restore")
def restore(
    archive: Annotated[Path, typer.Argument(metavar="FILE", help="A backup made by `helpline server backup`.")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    database_url: Annotated[str | None, typer.Option("--database-url", metavar="URL", help="Restore into this PostgreSQL database (default: a SQLite file in the data directory, or what the existing config says).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the keys, database and blobs this server has already.")] = False,
) -> None:
    """Restore a backup into an empty server: checks every file and hash first, then writes keys, database, blobs.

    Refuses to replace an existing signing key, database or blob without
    --force. Agents keep trusting the restored server: it has the same keys.
    Run it as the user the server runs as (the files it writes are theirs).

    Example: helpline server restore /backup/helpline-2026-12-01.tar --data-dir /var/lib/helpline
    """
    _require_server()
    from server.backup import restore_backup
    from server.settings import default_config_path, load_settings

    if data_dir is None:  # the data directory an existing config names, else the default
        existing = config or default_config_path(None)
        data_dir = load_settings(existing).data_dir if existing.exists() else Path("/var/lib/helpline")
    settings = restore_backup(archive, data_dir, config_path=config or default_config_path(data_dir),
                              database_url=database_url, force=force,
                              progress=lambda line: output.say(f"[dim]{output.esc(line)}…[/]"))
    from protocol import signing

    key = signing.load_private_key(settings.resolved_signing_key_file)
    output.say(f"Restored into {output.esc(settings.data_dir)}; server key {signing.fingerprint(signing.public_key_b64(key))}.")
    output.say("Start it with `helpline server run`.")
