"""The real restic 0.14 against the server's REST repositories, served by `helpline server run` over loopback.

A PC enrolled with the real CLI asks for its credential through the typed
client, signed with its key, as the agent does; restic then runs unchanged
with the URL in a 0600 --repository-file. The server's own prune runs the job's
code in this process against the same database, with the admin credential.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import subprocess
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agent.client import HelplineClient
from agent.store import AgentStore
from protocol.snapshots import CredentialRequest
from server.db import transaction, utcnow
from server.models import ResticCredential, ResticRepository
from server.restic_rest import hooks, prune
from server.runtime import build_runtime
from server.settings import load_settings
from tests.support.restic_cli import refused_then_stopped
from tests.support.s3 import moto_server, s3_bucket  # noqa: F401 - fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")]

PASSWORD = "repository-password-for-tests"
QUOTA = 12 * 1024 * 1024
RESTIC_TIMEOUT = 300


class Restic:
    """restic run as the agent runs it: URL and password in 0600 files, nothing secret on argv or in the environment."""

    def __init__(self, folder: Path, url: str):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.repository_file = folder / "repository"
        self.password_file = folder / "password"
        for path, text in ((self.repository_file, f"rest:{url}\n"), (self.password_file, PASSWORD + "\n")):
            path.write_text(text)
            path.chmod(0o600)
        self.url = url

    def _argv(self, *args: str) -> tuple[list[str], dict[str, str]]:
        env = {"PATH": os.environ["PATH"], "HOME": str(self.folder), "RESTIC_CACHE_DIR": str(self.folder / "cache")}
        return ["restic", "--repository-file", str(self.repository_file), "--password-file",
                str(self.password_file), "--no-cache", *args], env

    def run(self, *args: str) -> subprocess.CompletedProcess:
        argv, env = self._argv(*args)
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=RESTIC_TIMEOUT)

    def start(self, *args: str) -> subprocess.Popen:
        """Start restic in the background: a refused request makes restic 0.14 retry for about a minute."""
        argv, env = self._argv(*args)
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def ok(self, *args: str) -> subprocess.CompletedProcess:
        done = self.run(*args)
        assert done.returncode == 0, f"restic {' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}"
        return done

    def snapshots(self, *extra: str) -> list[dict]:
        return json.loads(self.ok("snapshots", "--json", *extra).stdout)

    def http(self, method: str, rel: str, data: bytes | None = None) -> int:
        """One raw request of restic's protocol with this credential; the HTTP status."""
        parts = urlsplit(self.url)
        plain = f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path}{rel}"
        request = urllib.request.Request(plain, data=data, method=method)
        token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def make_files(root: Path, seed: int) -> None:
    rng = random.Random(seed)
    for folder in ("Documents", "Pictures/2026"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(20):
        size = rng.choice((0, 10, 4000, 70_000, 600_000))
        (root / ("Documents" if i % 2 else "Pictures/2026") / f"file-{i}.bin").write_bytes(rng.randbytes(size))


def enroll(pc, server, admin_pc, hostname: str) -> AgentStore:
    """Enroll ``pc`` as a machine of its own (the test-only overrides of hostname and machine id)."""
    token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    machine = hashlib.sha256(hostname.encode()).hexdigest()[:32]
    pc.ok("agent", "enroll", server.url, token, env={"HELPLINE_TEST_HOSTNAME": hostname, "HELPLINE_TEST_MACHINE_ID": machine})
    return AgentStore(pc.agent_dir)


def credential(store: AgentStore, purpose: str = "backup", **extra):
    """The agent's own signed request for a repository credential, through the typed client."""
    state = store.require()
    with HelplineClient.connect(state.server_url, agent=store.signer(state)) as client:
        return client.snapshot_credential(CredentialRequest(purpose=purpose, **extra))


@pytest.fixture
def server(server_factory):
    return server_factory(snapshots__quota_bytes=QUOTA)


@pytest.fixture
def admin(make_pc, server):
    pc = make_pc("admin")
    pc.login(server)
    return pc


def server_runtime(server, clock):
    settings = load_settings(server.data_dir / "server.toml")
    settings.snapshots = settings.snapshots.model_copy(update={"local_url": server.url})
    return build_runtime(settings, clock=clock)


def test_restic_backs_up_restores_checks_and_the_server_prunes(server, admin, make_pc, tmp_path, monkeypatch):
    store = enroll(make_pc("laptop"), server, admin, "laptop")
    given = credential(store)
    assert given.mode == "append" and given.agent_id == store.require().agent_id
    restic = Restic(tmp_path / "restic", given.url)
    home = tmp_path / "home"
    make_files(home, seed=1)
    restic.ok("init")
    restic.ok("backup", "--host", "laptop", str(home))
    first = tree(home)
    (home / "Documents" / "file-1.bin").unlink()
    (home / "Documents" / "new.txt").write_text("written after the first snapshot\n")
    restic.ok("backup", "--host", "laptop", str(home))
    snapshots = restic.snapshots()
    assert len(snapshots) == 2

    restored = tmp_path / "restored"
    reader = Restic(tmp_path / "restic-read", credential(store, "restore").url)
    reader.ok("restore", snapshots[0]["short_id"], "--no-lock", "--target", str(restored))
    assert tree(restored / home.relative_to("/")) == first  # byte-identical, the deleted file back
    restic.ok("check")

    # The server's own prune: fence, admin credential, forget --prune with the retention policy.
    monkeypatch.setattr(hooks, "_provided", lambda module, name: (lambda s, a: PASSWORD) if name == "escrowed_password" else None)
    later = utcnow() + timedelta(days=8)
    runtime = server_runtime(server, lambda: later)
    try:
        outcome = prune.prune_one(runtime, given.agent_id)
        assert outcome.state == "pruned", outcome.detail
        with transaction(runtime.sessions) as session:
            assert session.get(ResticRepository, given.agent_id).fenced_at is None
    finally:
        runtime.engine.dispose()
    left = restic.snapshots()
    assert [s["id"] for s in left] == [snapshots[1]["id"]]  # both in one hour: keep-hourly keeps the newest
    restic.ok("check", "--read-data")
    again = tmp_path / "again"
    restic.ok("restore", "latest", "--target", str(again))
    assert tree(again / home.relative_to("/")) == tree(home)


def test_append_only_holds_against_the_pcs_own_credential(server, admin, make_pc, tmp_path):
    store = enroll(make_pc("laptop"), server, admin, "laptop")
    restic = Restic(tmp_path / "restic", credential(store).url)
    home = tmp_path / "home"
    make_files(home, seed=2)
    restic.ok("init")
    restic.ok("backup", str(home))
    [snapshot] = restic.snapshots()

    # A refused request makes restic 0.14 retry with back-off for about a minute, so the two restic runs that
    # must fail run in the background beside the checks below (which read without a lock).
    # restic forget with the PC's own credential cannot remove history.
    forget = restic.start("forget", snapshot["id"])
    # An expired credential opens nothing, for raw requests and for restic.
    late = Restic(tmp_path / "late", credential(store).url)
    runtime = server_runtime(server, utcnow)
    try:
        with transaction(runtime.sessions) as session:
            row = session.query(ResticCredential).filter(ResticCredential.username == urlsplit(late.url).username).one()
            row.expires_at = row.created_at
    finally:
        runtime.engine.dispose()
    assert late.http("GET", "keys/") == 401
    late_snapshots = late.start("snapshots")

    # Nor can raw requests: delete, overwrite, or store bytes under a name they do not hash to.
    names = restic.ok("list", "packs", "--no-lock").stdout.split()
    assert names
    for rel in (f"data/{names[0]}", f"snapshots/{snapshot['id']}"):
        assert restic.http("DELETE", rel) == 403
    assert restic.http("POST", f"data/{names[0]}", b"replacement bytes") == 409
    assert restic.http("POST", f"keys/{hashlib.sha256(b'x').hexdigest()}", b"not x") == 422
    restic.ok("check", "--read-data", "--no-lock")
    # The quota: a clear refusal, nothing stored.
    assert restic.http("POST", f"data/{hashlib.sha256(bytes(QUOTA)).hexdigest()}", bytes(QUOTA)) == 507

    # A read credential reads (restore without a lock) and writes nothing.
    reader = Restic(tmp_path / "reader", credential(store, "restore").url)
    assert reader.run("backup", str(home)).returncode != 0
    reader.ok("restore", "latest", "--no-lock", "--target", str(tmp_path / "out"))
    assert tree(tmp_path / "out" / home.relative_to("/")) == tree(home)

    # Another PC's credential does not open this repository.
    other = credential(enroll(make_pc("desktop"), server, admin, "desktop"))
    foreign = Restic(tmp_path / "foreign", other.url.replace(other.agent_id, snapshot_agent(restic)))
    assert foreign.http("GET", "keys/") == 403

    assert refused_then_stopped(forget, "403"), "restic forget was not refused by the server"
    assert refused_then_stopped(late_snapshots, "401"), "restic with an expired credential was not refused"
    assert [s["id"] for s in reader.snapshots("--no-lock")] == [snapshot["id"]]  # history is whole


def snapshot_agent(restic: Restic) -> str:
    return urlsplit(restic.url).path.rstrip("/").rsplit("/", 1)[1]


def test_the_repository_lives_in_an_s3_bucket_too(server_factory, moto_server, s3_bucket, make_pc, tmp_path):  # noqa: F811
    server = server_factory(**moto_server.blob_env(s3_bucket))
    admin = make_pc("admin")
    admin.login(server)
    store = enroll(make_pc("laptop"), server, admin, "laptop")
    restic = Restic(tmp_path / "restic", credential(store).url)
    home = tmp_path / "home"
    make_files(home, seed=3)
    restic.ok("init")
    restic.ok("backup", str(home))
    restic.ok("check", "--read-data")
    restic.ok("restore", "latest", "--target", str(tmp_path / "out"))
    assert tree(tmp_path / "out" / home.relative_to("/")) == tree(home)
    agent_id = store.require().agent_id
    keys = [o["Key"] for o in moto_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert f"snapshots/{agent_id}/config" in keys and any(k.startswith(f"snapshots/{agent_id}/data/") for k in keys)
    assert not (server.data_dir / "blobs").exists()
