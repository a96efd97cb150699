"""`helpline server backup` of a live server with a ticket, a bundle, an enrolled agent and an escrowed
snapshot password, restored into a fresh data directory (and database): the restored server starts, the agent
still authenticates, the bundle downloads byte for byte and the escrowed password opens. An archive that was
tampered with, or a target that is not empty, is refused before anything is written."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from agent import upload
from agent.client import HelplineClient
from agent.store import AgentStore
from protocol.errors import ExitStatus
from protocol.snapshots import EscrowPut
from server import escrow
from server.db import transaction
from server.runtime import build_runtime
from server.settings import load_settings
from tests.e2e.test_upload import downloaded
from tests.support.bundles import write_archive
from tests.support.live import PC, LiveServer, helpline_bin  # noqa: F401

pytestmark = pytest.mark.e2e

PASSWORD = "repository password of the PC"


def escrowed(data_dir: Path, agent_id: str) -> str | None:
    """What the server in ``data_dir`` opens as ``agent_id``'s escrowed password (its own keys, its own database)."""
    runtime = build_runtime(load_settings(data_dir / "server.toml", data_dir=data_dir))
    try:
        with transaction(runtime.sessions) as session:
            return escrow.escrowed_password(session, agent_id)
    finally:
        runtime.engine.dispose()


@pytest.fixture
def busy_server(live_server, admin_pc, make_pc, tmp_path):
    """A live server holding a ticket with a PC paired to it, a bundle, and the PC's escrowed password."""
    token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    pc = make_pc("ana-pc")
    agent_id = pc.ok("agent", "enroll", live_server.url, token, "--json").json()["agent_id"]
    number = admin_pc.ok("ticket", "create", "Outlook crashes", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    pc.ok("pair", code)
    signer = AgentStore(pc.agent_dir).signer()
    archive = write_archive(tmp_path / "b.tar.gz", payload=300_000)
    original = archive.read_bytes()
    upload.deliver(upload.enqueue(archive, number, live_server.url, directory=pc.agent_dir), signer,
                   directory=pc.agent_dir)
    with HelplineClient.connect(live_server.url, agent=signer) as client:
        client.put_escrow(EscrowPut(password=PASSWORD))
    assert escrowed(live_server.data_dir, agent_id) == PASSWORD
    return pc, agent_id, number, original


def test_a_backup_restored_into_a_fresh_server_keeps_agents_bundles_and_escrow(live_server, admin_pc, busy_server,
                                                                              new_database, tmp_path):
    pc, agent_id, number, original = busy_server
    backup = tmp_path / "backups" / "helpline.tar"
    made = admin_pc.ok("server", "backup", "--data-dir", str(live_server.data_dir), "--to", str(backup), "--json").json()
    assert made["blobs"] >= 1 and backup.stat().st_mode & 0o777 == 0o600
    with tarfile.open(backup) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert "keys/server-signing-key.pem" in names and names[-1] == "manifest.json"
    assert manifest["database"] == ("postgresql" if live_server.database_url else "sqlite")
    again = admin_pc.run("server", "backup", "--data-dir", str(live_server.data_dir), "--to", str(backup))
    assert again.code == ExitStatus.CONFLICT  # never overwritten

    # The old server is gone; a new machine restores the backup into an empty folder (and database).
    live_server.stop()
    fresh = tmp_path / "restored"
    database_url = new_database()
    args = ["server", "restore", str(backup), "--data-dir", str(fresh)]
    admin_pc.ok(*args, *(["--database-url", database_url] if database_url else []))
    assert (fresh / "server.toml").stat().st_mode & 0o777 == 0o600
    refused = admin_pc.run(*args, *(["--database-url", database_url] if database_url else []))
    assert refused.code == ExitStatus.CONFLICT and "exists" in refused.stderr  # not over a restored server

    restored = LiveServer(data_dir=fresh, database_url=database_url, port=live_server.port)
    restored.start()
    try:
        assert "Outlook crashes" in pc.ok("status").stdout  # the agent authenticates; its pinned key still signs
        meta, data = downloaded(restored, admin_pc, number)  # the admin's login token survived too
        assert data == original and meta["sha256"] == hashlib.sha256(original).hexdigest()
        assert escrowed(fresh, agent_id) == PASSWORD
    finally:
        restored.stop()


def rewritten(backup: Path, dest: Path, change) -> Path:
    """A copy of ``backup`` with its members passed through ``change(name, data) -> [(name, data, type)]``."""
    with tarfile.open(backup) as src, tarfile.open(dest, "w") as out:
        for member in src.getmembers():
            for name, data, kind in change(member.name, src.extractfile(member).read()):
                info = tarfile.TarInfo(name)
                info.type, info.size = kind, len(data)
                if kind == tarfile.SYMTYPE:
                    info.linkname, info.size = "/etc/passwd", 0
                out.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return dest


@pytest.mark.parametrize("tamper", ["flipped-byte", "path-escape", "symlink", "extra-file"])
def test_a_tampered_backup_is_refused_before_anything_is_written(live_server, admin_pc, tmp_path, tamper):
    backup = tmp_path / "helpline.tar"
    admin_pc.ok("server", "backup", "--data-dir", str(live_server.data_dir), "--to", str(backup))

    def change(name: str, data: bytes):
        if tamper == "flipped-byte" and name == "keys/server-signing-key.pem":
            return [(name, data[:-2] + bytes([data[-2] ^ 1]) + data[-1:], tarfile.REGTYPE)]
        if tamper == "path-escape" and name == "manifest.json":
            return [("blobs/../../../../tmp/owned", b"x", tarfile.REGTYPE), (name, data, tarfile.REGTYPE)]
        if tamper == "symlink" and name == "manifest.json":
            return [("blobs/link", b"", tarfile.SYMTYPE), (name, data, tarfile.REGTYPE)]
        if tamper == "extra-file" and name == "manifest.json":
            return [("keys/authorized_keys", b"ssh-ed25519 AAAA", tarfile.REGTYPE), (name, data, tarfile.REGTYPE)]
        return [(name, data, tarfile.REGTYPE)]

    bad = rewritten(backup, tmp_path / "bad.tar", change)
    fresh = tmp_path / "fresh"
    result = admin_pc.run("server", "restore", str(bad), "--data-dir", str(fresh))
    assert result.code == ExitStatus.INVALID, result.stderr
    assert "nothing was restored" in result.stderr
    assert not fresh.exists() or list(fresh.iterdir()) == []
