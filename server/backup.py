"""Backing up a whole server into one file, and restoring it into an empty one.

A backup is an uncompressed tar archive (mode 0600) holding:

- ``database/helpline.sqlite``: a consistent copy made with SQLite's online
  backup API, or ``database/helpline.pgdump``: ``pg_dump --format=custom`` by
  the PostgreSQL tools of the server's own major version;
- ``blobs/<key>``: every blob (bundles, attachments, recordings, the PCs'
  restic repositories), read through the blob store, so a bucket is copied
  the same way as a local folder;
- ``keys/``: the signing key, the retired keys and the hand-overs (server.keys);
- ``config/server.toml`` (the config file, if the server has one) and
  ``config/secret_key`` (the secret in effect, wherever it came from);
- ``manifest.json`` last: format, Helpline version, the kind of database, and
  the SHA-256 and size of every other member.

It contains every secret the server has: whoever holds it can impersonate the
server to every PC and open every escrowed snapshot password. Keep it like the
signing key itself (README, docs/threat-model.md).

The database is copied first, then the blobs: a blob the copy refers to is in
the archive unless a sweep deleted it meanwhile; blobs written after the copy
are extra and harmless. Restoring checks the whole archive before writing
anything: every member's name and type (regular files with names from a fixed
set; blob names are blob keys, stored through the blob store, never used as
paths), every hash against the manifest, no member missing or extra. It
refuses to write over an existing key, database or blob unless forced.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from protocol.errors import ConfigError, ConflictError, DamagedError, InvalidInputError, UnavailableError
from server import __version__
from server.blobs import blob_store
from server.blobs.keys import is_key
from server.db import create_db_engine
from server.keys import HANDOVERS_FILE, RETIRED_DIR, key_files
from server.migrate import upgrade
from server.settings import CONFIG_FILE_NAME, ServerSettings, load_settings

FORMAT = "helpline-server-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "database/helpline.sqlite"
PG_MEMBER = "database/helpline.pgdump"
CONFIG_MEMBER = "config/server.toml"
SECRET_MEMBER = "config/secret_key"
KEY_MEMBER = "keys/server-signing-key.pem"
HANDOVERS_MEMBER = f"keys/{HANDOVERS_FILE}"
_RETIRED_MEMBER = re.compile(rf"^keys/{RETIRED_DIR}/[0-9A-Za-z_-]{{1,80}}\.pem$")
_FIXED = {SQLITE_MEMBER, PG_MEMBER, CONFIG_MEMBER, SECRET_MEMBER, KEY_MEMBER, HANDOVERS_MEMBER}
_BLOCK = 1 << 20
PG_TIMEOUT = 3600

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    database: str  # sqlite | postgresql
    blobs: int
    blob_bytes: int
    size: int


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through it."""

    def __init__(self, source: BinaryIO):
        self.source, self.digest, self.size = source, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(len(buffer))
        if not data:
            return 0
        n = len(data)
        buffer[:n] = data
        self.digest.update(data)
        self.size += n
        return n


def _database_kind(url: str) -> str:
    return make_url(url).get_backend_name()


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without its password, and the environment carrying the password (never on a command line)."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def pg_tool(name: str, url: str) -> str:
    """``pg_dump`` or ``pg_restore`` of the server's major version; ConfigError if none is installed.

    Looks at $HELPLINE_PG_BINDIR, then /usr/lib/postgresql/<major>/bin (Debian),
    then PATH (if that tool says it is of that major version).
    """
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            number = int(connection.execute(text("SHOW server_version_num")).scalar_one())
    finally:
        engine.dispose()
    major = number // 10000
    candidates = [Path(os.environ["HELPLINE_PG_BINDIR"]) / name] if os.environ.get("HELPLINE_PG_BINDIR") else []
    candidates.append(Path(f"/usr/lib/postgresql/{major}/bin") / name)
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if not os.access(candidate, os.X_OK):
            continue
        try:
            said = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        version = re.search(r"(\d+)(?:\.\d+)?", said)
        if version and int(version.group(1)) == major:
            return str(candidate)
    raise ConfigError(f"No {name} of PostgreSQL {major} (the database server's version) is installed here.",
                      hint=f"Install the PostgreSQL {major} client tools, or set HELPLINE_PG_BINDIR to their folder.")


def _add_file(tar: tarfile.TarFile, name: str, source: BinaryIO, size: int, hashes: dict[str, dict]) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, 0
    reader = _Hashing(source)
    try:
        tar.addfile(info, io.BufferedReader(reader, _BLOCK))
    except OSError as exc:
        raise UnavailableError(f"{name} changed while it was copied.", hint="Run the backup again.") from exc
    if reader.size != size:
        raise UnavailableError(f"{name} changed while it was copied.", hint="Run the backup again.")
    hashes[name] = {"sha256": reader.digest.hexdigest(), "size": size}


def _add_path(tar: tarfile.TarFile, name: str, path: Path, hashes: dict[str, dict]) -> None:
    with path.open("rb") as fh:
        _add_file(tar, name, fh, os.fstat(fh.fileno()).st_size, hashes)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, hashes: dict[str, dict]) -> None:
    _add_file(tar, name, io.BytesIO(data), len(data), hashes)


@contextmanager
def _scratch(near: Path) -> Iterator[Path]:
    """A private scratch folder next to ``near`` (same file system), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=".helpline-backup-", dir=near))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _copy_sqlite(url: str, dest: Path) -> None:
    source_path = make_url(url).database
    if not source_path or not Path(source_path).exists():
        raise ConfigError(f"The SQLite database {source_path} does not exist.")
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    target = sqlite3.connect(dest)
    try:
        source.backup(target)  # the online backup API: a consistent copy while the server writes
    finally:
        target.close()
        source.close()


def _dump_postgresql(url: str, dest: Path) -> None:
    tool = pg_tool("pg_dump", url)
    target, env = _libpq(url)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    done = subprocess.run([tool, "--format=custom", "--no-owner", "--no-privileges", "--file", str(dest), "--dbname",
                           target], env=env, capture_output=True, text=True, timeout=PG_TIMEOUT)
    if done.returncode != 0:
        raise UnavailableError(f"pg_dump failed: {done.stderr.strip()[:500]}")


def create_backup(settings: ServerSettings, dest: Path, *, now: datetime, config_path: Path | None = None,
                  progress: Progress = lambda line: None) -> BackupSummary:
    """Write a backup of the server ``settings`` describe to ``dest`` (0600); ConflictError if it exists."""
    key_file = settings.resolved_signing_key_file
    if not key_file.exists():
        raise ConfigError(f"There is no signing key at {key_file}: this is not a set-up server.",
                          hint="Check --data-dir and --config.")
    dest = dest.absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConflictError(f"{dest} exists already.", hint="Give a new file name; a backup never overwrites one.") from None
    kind = _database_kind(settings.resolved_database_url)
    hashes: dict[str, dict] = {}
    blobs = blob_bytes = 0
    finished = False
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar, \
                _scratch(dest.parent) as scratch:
            progress("copying the database")
            if kind == "sqlite":
                _copy_sqlite(settings.resolved_database_url, scratch / "db.sqlite")
                _add_path(tar, SQLITE_MEMBER, scratch / "db.sqlite", hashes)
            elif kind == "postgresql":
                _dump_postgresql(settings.resolved_database_url, scratch / "db.pgdump")
                _add_path(tar, PG_MEMBER, scratch / "db.pgdump", hashes)
            else:
                raise ConfigError(f"Backups of a {kind} database are not supported.")
            progress("copying the keys")
            for path in key_files(key_file):
                if path == key_file:
                    name = KEY_MEMBER
                elif path.name == HANDOVERS_FILE:
                    name = HANDOVERS_MEMBER
                else:
                    name = f"keys/{RETIRED_DIR}/{path.name}"
                _add_path(tar, name, path, hashes)
            if config_path is not None and config_path.exists():
                _add_path(tar, CONFIG_MEMBER, config_path, hashes)
            _add_bytes(tar, SECRET_MEMBER, settings.secret_key.encode("utf-8"), hashes)
            progress("copying the blobs")
            store = blob_store(settings.blobs)
            for key in store.iter_keys(""):
                size = store.stat(key).size
                with store.open(key) as stream:
                    _add_file(tar, f"blobs/{key}", stream, size, hashes)
                blobs, blob_bytes = blobs + 1, blob_bytes + size
            manifest = {"format": FORMAT, "version": FORMAT_VERSION, "helpline": __version__,
                        "created_at": now.isoformat(), "database": kind, "blob_backend": settings.blobs.backend,
                        "files": hashes}
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode(), {})
        finished = True
    finally:
        if not finished:
            dest.unlink(missing_ok=True)
    return BackupSummary(dest, kind, blobs, blob_bytes, dest.stat().st_size)


# --- restoring ------------------------------------------------------------------------------------------------


def _allowed(name: str) -> bool:
    if name in _FIXED or _RETIRED_MEMBER.fullmatch(name):
        return True
    return name.startswith("blobs/") and is_key(name[len("blobs/"):])


def _stream_hash(source: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while block := source.read(_BLOCK):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def check_archive(tar: tarfile.TarFile) -> dict[str, Any]:
    """Check every member of an untrusted backup and return its manifest; DamagedError if anything is off.

    Members must be regular files named from a fixed set (or ``blobs/<blob key>``),
    each once, each hashing to what the manifest says, none missing.
    """
    seen: dict[str, dict] = {}
    manifest: dict[str, Any] | None = None
    for member in tar:
        name = member.name
        shown = name[:80].encode("unicode_escape").decode("ascii")
        if not member.isreg():
            raise DamagedError(f"The backup holds {shown!r}, which is not a regular file; nothing was restored.")
        if name in seen or (name == MANIFEST and manifest is not None):
            raise DamagedError(f"The backup holds {shown!r} twice; nothing was restored.")
        source = tar.extractfile(member)
        assert source is not None
        if name == MANIFEST:
            if member.size > 16 << 20:
                raise DamagedError("The backup's manifest is too large; nothing was restored.")
            try:
                manifest = json.loads(source.read())
            except ValueError as exc:
                raise DamagedError("The backup's manifest is not JSON; nothing was restored.") from exc
            continue
        if not _allowed(name):
            raise DamagedError(f"The backup holds {shown!r}, which no Helpline backup holds; nothing was restored.")
        sha256, size = _stream_hash(source)
        seen[name] = {"sha256": sha256, "size": size}
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DamagedError("This is not a Helpline server backup (no manifest).")
    if manifest.get("version") != FORMAT_VERSION:
        raise DamagedError(f"This backup has format version {manifest.get('version')!r}; this Helpline reads "
                           f"version {FORMAT_VERSION}.", hint="Restore it with the Helpline version that made it.")
    files = manifest.get("files")
    if not isinstance(files, dict) or files != seen:
        missing = sorted(set(files or {}) - set(seen))
        bad = sorted(n for n in seen if (files or {}).get(n) != seen[n])
        what = f"missing {missing[0]!r}" if missing else f"{bad[0]!r} does not match its hash" if bad else "it lists other files"
        raise DamagedError(f"The backup is damaged ({what}); nothing was restored.")
    database = manifest.get("database")
    if database not in ("sqlite", "postgresql") or ({"sqlite": SQLITE_MEMBER, "postgresql": PG_MEMBER}[database]
                                                    not in seen) or KEY_MEMBER not in seen:
        raise DamagedError("The backup has no database or no signing key; nothing was restored.")
    return manifest


def _restored_config(text_: str | None, data_dir: Path, database_url: str | None, secret: str) -> str:
    """The archive's config with this server's data_dir and database_url (top-level lines replaced) and a secret."""
    lines = (text_ or "").splitlines()
    top_end = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    replaced = re.compile(r"^\s*(data_dir|database_url|secret_key|signing_key_file)\s*=")
    kept = [line for line in lines[:top_end] if not replaced.match(line)] + lines[top_end:]
    head = ["# Restored by `helpline server restore`.", f"data_dir = {json.dumps(str(data_dir))}",
            f"secret_key = {json.dumps(secret)}"]
    if database_url:
        head.append(f"database_url = {json.dumps(database_url)}")
    result = "\n".join(head + kept) + "\n"
    try:
        tomllib.loads(result)
    except tomllib.TOMLDecodeError as exc:
        raise DamagedError(f"The backup's server.toml cannot be restored: {exc}.") from exc
    return result


def _is_empty_database(url: str) -> bool:
    kind = _database_kind(url)
    if kind == "sqlite":
        path = make_url(url).database
        return not path or not Path(path).exists() or Path(path).stat().st_size == 0
    engine = create_db_engine(url)
    try:
        return not inspect(engine).get_table_names()
    finally:
        engine.dispose()


def _write_member(tar: tarfile.TarFile, name: str, dest: Path, mode: int = 0o600) -> None:
    source = tar.extractfile(name)
    assert source is not None
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = dest.with_name(dest.name + ".restoring")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, _BLOCK)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)


def restore_backup(archive: Path, data_dir: Path, *, config_path: Path | None = None, database_url: str | None = None,
                   force: bool = False, progress: Progress = lambda line: None) -> ServerSettings:
    """Restore ``archive`` into the server at ``data_dir`` (its config: ``config_path``, else DATA_DIR/server.toml).

    When that config exists it says where the database, blobs and keys go;
    otherwise it is written from the backup's, with this data directory and
    ``database_url`` (default: SQLite in the data directory). ConflictError
    if a key, database or blob is there already (unless ``force``); DamagedError
    if the archive fails any check. Returns the restored server's settings.
    """
    try:
        tar = tarfile.open(archive, mode="r:")
    except FileNotFoundError:
        raise InvalidInputError(f"{archive} does not exist.") from None
    except tarfile.TarError as exc:
        raise DamagedError(f"{archive} is not a Helpline server backup (not a tar archive).") from exc
    with tar:
        progress("checking the backup")
        manifest = check_archive(tar)
        config_path = config_path or data_dir / CONFIG_FILE_NAME
        written = not config_path.exists()
        if written:
            names = set(manifest["files"])
            old = tar.extractfile(CONFIG_MEMBER).read().decode("utf-8") if CONFIG_MEMBER in names else None  # type: ignore[union-attr]
            secret = tar.extractfile(SECRET_MEMBER).read().decode("utf-8") if SECRET_MEMBER in names else ""  # type: ignore[union-attr]
            if not secret:
                raise DamagedError("The backup holds no secret key; nothing was restored.")
            config_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(_restored_config(old, data_dir.absolute(), database_url, secret))
        try:
            settings = load_settings(config_path, data_dir=data_dir.absolute())
            url = settings.resolved_database_url
            if _database_kind(url) != manifest["database"]:
                raise ConflictError(f"The backup holds a {manifest['database']} database; this server is set up for "
                                    f"{_database_kind(url)}.", hint="Give --database-url of the right kind.")
            key_file = settings.resolved_signing_key_file
            store = blob_store(settings.blobs)
            if not force:
                if key_file.exists():
                    raise ConflictError(f"{key_file} exists: this server has its own signing key.",
                                        hint="Restore into an empty data directory, or add --force to replace it.")
                if not _is_empty_database(url):
                    raise ConflictError("The database is not empty.", hint="Restore into a new database, or add "
                                        "--force to replace what it holds.")
                if next(iter(store.iter_keys("")), None) is not None:
                    raise ConflictError("The blob store is not empty.", hint="Restore into an empty one, or add --force.")
        except BaseException:
            if written:
                config_path.unlink(missing_ok=True)
            raise

        progress("restoring the keys")
        for name in sorted(manifest["files"]):
            if name == KEY_MEMBER:
                _write_member(tar, name, key_file)
            elif name == HANDOVERS_MEMBER:
                _write_member(tar, name, key_file.parent / HANDOVERS_FILE, 0o644)
            elif _RETIRED_MEMBER.fullmatch(name):
                _write_member(tar, name, key_file.parent / RETIRED_DIR / name.rsplit("/", 1)[1])
        progress("restoring the database")
        if manifest["database"] == "sqlite":
            _write_member(tar, SQLITE_MEMBER, Path(make_url(url).database))
        else:
            _restore_postgresql(tar, url, data_dir, clean=force)
        progress("restoring the blobs")
        for name in sorted(manifest["files"]):
            if name.startswith("blobs/"):
                source = tar.extractfile(name)
                assert source is not None
                store.put(name[len("blobs/"):], source, size_hint=manifest["files"][name]["size"],
                          expected_sha256=manifest["files"][name]["sha256"])
    progress("bringing the schema up to date")
    engine = create_db_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return settings


def _restore_postgresql(tar: tarfile.TarFile, url: str, data_dir: Path, *, clean: bool) -> None:
    tool = pg_tool("pg_restore", url)
    target, env = _libpq(url)
    with _scratch(data_dir) as scratch:
        dump = scratch / "db.pgdump"
        _write_member(tar, PG_MEMBER, dump)
        args = [tool, "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", "--dbname", target]
        if clean:
            args += ["--clean", "--if-exists"]
        done = subprocess.run([*args, str(dump)], env=env, capture_output=True, text=True, timeout=PG_TIMEOUT)
    if done.returncode != 0:
        raise UnavailableError(f"pg_restore failed: {done.stderr.strip()[:500]}")
