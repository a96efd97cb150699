"""Bundle uploads: resumable through dropped connections, server and client restarts,
byte-identical on arrival; hostile or oversized bundles refused without losing anything."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from agent import upload
from agent.http import ServerConnection
from agent.store import AgentStore
from protocol.archive import sha256_file
from protocol.errors import DamagedError, ExitStatus, InvalidInputError, NotFoundError, TooLargeError, UnavailableError
from tests.support.bundles import manifest_bytes, write_archive
from tests.support.flaky_proxy import FlakyProxy
from tests.support.live import free_port, token_of
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

FAST = upload.RetryPolicy(attempts=12, first_delay=0.05, max_delay=1.0, deadline=120)
# Outlasts a server restart on a loaded machine (a start can take several seconds), still bounded.
PATIENT = upload.RetryPolicy(attempts=90, first_delay=0.05, max_delay=0.5, deadline=90)
CHUNK = 256 * 1024


def paired_pc(server, admin_pc, make_pc, name="user"):
    number = admin_pc.ok("ticket", "create", "Upload test", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    pc = make_pc(name)
    pc.ok("pair", code, "--server", server.url)
    signer = AgentStore(pc.agent_dir).signer()
    return number, pc, signer


def downloaded(server, admin_pc, number) -> tuple[dict, bytes]:
    bundles = admin_pc.ok("ticket", "show", number, "--json").json()["bundles"]
    assert len(bundles) == 1
    with ServerConnection(server.url, token_of(admin_pc)) as conn:
        response = conn._client.get(f"/v1/bundles/{bundles[0]['id']}/archive")
    assert response.status_code == 200
    return bundles[0], response.content


@pytest.fixture
def chunked_server(server_factory):
    return server_factory(upload_chunk_bytes=str(CHUNK))


def test_upload_survives_dropped_connections(chunked_server, make_pc, tmp_path):
    admin = make_pc("admin")
    admin.login(chunked_server)
    number, pc, signer = paired_pc(chunked_server, admin, make_pc)
    archive = write_archive(tmp_path / "b.tar.gz", payload=3 * 1024 * 1024)
    original = archive.read_bytes()
    proxy = FlakyProxy(chunked_server.port, drop_after=600 * 1024, drops=4).start()
    try:
        entry = upload.enqueue(archive, number, proxy.url, directory=pc.agent_dir)
        bundle = upload.deliver(entry, signer, directory=pc.agent_dir, policy=FAST)
    finally:
        proxy.stop()
    assert proxy.dropped >= 3
    meta, data = downloaded(chunked_server, admin, number)
    assert data == original
    assert meta["sha256"] == hashlib.sha256(original).hexdigest() == bundle.sha256
    assert upload.pending(pc.agent_dir) == []
    timeline = admin.ok("ticket", "show", number, "--json").json()["timeline"]
    assert timeline[-1]["kind"] == "bundle"


def test_upload_resumes_after_server_restart(chunked_server, make_pc, tmp_path):
    admin = make_pc("admin")
    admin.login(chunked_server)
    number, pc, signer = paired_pc(chunked_server, admin, make_pc)
    archive = write_archive(tmp_path / "b.tar.gz", payload=2 * 1024 * 1024)
    original = archive.read_bytes()
    restarted = threading.Event()

    def restart_midway(sent: int, total: int) -> None:
        if sent >= 3 * CHUNK and not restarted.is_set():
            restarted.set()
            chunked_server.stop()  # the server goes away between two chunks
            threading.Thread(target=lambda: (time.sleep(1.0), chunked_server.start()), daemon=True).start()

    entry = upload.enqueue(archive, number, chunked_server.url, directory=pc.agent_dir)
    upload.deliver(entry, signer, directory=pc.agent_dir, policy=PATIENT, progress=restart_midway)
    assert restarted.is_set()
    _, data = downloaded(chunked_server, admin, number)
    assert data == original


def test_upload_resumes_after_client_restart(chunked_server, make_pc, tmp_path):
    admin = make_pc("admin")
    admin.login(chunked_server)
    number, pc, signer = paired_pc(chunked_server, admin, make_pc)
    archive = write_archive(tmp_path / "b.tar.gz", payload=2 * 1024 * 1024)
    original = archive.read_bytes()

    def crash(sent: int, total: int) -> None:
        if sent >= 4 * CHUNK:
            raise KeyboardInterrupt  # the program is stopped half-way

    entry = upload.enqueue(archive, number, chunked_server.url, directory=pc.agent_dir)
    with pytest.raises(KeyboardInterrupt):
        upload.deliver(entry, signer, directory=pc.agent_dir, policy=FAST, progress=crash)
    queued = upload.pending(pc.agent_dir)
    assert [e.id for e in queued] == [entry.id] and queued[0].upload_id

    first_report: list[int] = []
    upload.deliver(queued[0], signer, directory=pc.agent_dir, policy=FAST,
                   progress=lambda sent, total: first_report.append(sent))
    assert first_report[0] >= 4 * CHUNK  # only the missing chunks were sent again
    _, data = downloaded(chunked_server, admin, number)
    assert data == original
    assert upload.pending(pc.agent_dir) == []


def test_unreachable_server_keeps_the_bundle_queued(live_server, admin_pc, make_pc, tmp_path):
    number, pc, signer = paired_pc(live_server, admin_pc, make_pc)
    archive = write_archive(tmp_path / "b.tar.gz")
    entry = upload.enqueue(archive, number, f"http://127.0.0.1:{free_port()}", directory=pc.agent_dir)
    quick = upload.RetryPolicy(attempts=2, first_delay=0.01, max_delay=0.02, deadline=5)
    with pytest.raises(UnavailableError) as err:
        upload.deliver(entry, signer, directory=pc.agent_dir, policy=quick)
    assert err.value.status == ExitStatus.UNAVAILABLE
    assert "stays queued" in err.value.hint
    assert [e.id for e in upload.pending(pc.agent_dir)] == [entry.id]


def test_oversized_bundle_is_refused_before_sending(server_factory, make_pc, tmp_path):
    server = server_factory(max_bundle_bytes="20000")
    admin = make_pc("admin")
    admin.login(server)
    number, pc, signer = paired_pc(server, admin, make_pc)
    archive = write_archive(tmp_path / "b.tar.gz", payload=100_000)
    entry = upload.enqueue(archive, number, server.url, directory=pc.agent_dir)
    with pytest.raises(TooLargeError):
        upload.deliver(entry, signer, directory=pc.agent_dir, policy=FAST)
    assert admin.ok("audit", "--action", "upload.", "--json").json() == []
    # The server refuses it too, if asked directly.
    with ServerConnection(server.url, agent=signer) as conn, pytest.raises(TooLargeError):
        conn.post(f"agent/tickets/{number}/uploads", json={"filename": "b.tar.gz", "size": 100_000, "sha256": "0" * 64})


@pytest.mark.parametrize("members, reason", [
    ([("helpline-bundle/../../etc/cron.d/evil", b"* * * * * root sh")], "member path with '..'"),
    ([("/etc/passwd", b"root::0:0")], "absolute member path"),
    ([("helpline-bundle/manifest.json", b"{}")], "has no helpline-bundle/summary.json"),
    ([("elsewhere/manifest.json", b"{}")], "outside helpline-bundle"),
    ([("helpline-bundle/manifest.json", b'{"schema_version": 1, "totals": {"files": "many"}}'),
      ("helpline-bundle/summary.json", b"{}"), ("helpline-bundle/report.html", b"<p></p>")],
     "manifest.json is not a valid bundle manifest"),
    ([("helpline-bundle/manifest.json", manifest_bytes()), ("helpline-bundle/summary.json", b"[1, 2]"),
      ("helpline-bundle/report.html", b"<p></p>")], "summary.json is not a JSON object"),
])
def test_hostile_bundles_are_refused(live_server, admin_pc, make_pc, tmp_path, members, reason):
    number, pc, signer = paired_pc(live_server, admin_pc, make_pc)
    good = write_archive(tmp_path / "good.tar.gz")
    upload.deliver(upload.enqueue(good, number, live_server.url, directory=pc.agent_dir), signer,
                   directory=pc.agent_dir, policy=FAST)
    hostile = write_archive(tmp_path / "evil.tar.gz", members)
    entry = upload.enqueue(hostile, number, live_server.url, directory=pc.agent_dir)
    with pytest.raises(InvalidInputError) as err:
        upload.deliver(entry, signer, directory=pc.agent_dir, policy=FAST)
    assert reason in err.value.message
    bundles = admin_pc.ok("ticket", "show", number, "--json").json()["bundles"]
    assert len(bundles) == 1  # the earlier bundle is still there, the hostile one is not
    refused = admin_pc.ok("audit", "--action", "bundle.refused", "--json").json()
    assert len(refused) == 1 and reason in refused[0]["details"]["reason"]


def test_damaged_chunk_is_refused(live_server, admin_pc, make_pc, tmp_path):
    number, pc, signer = paired_pc(live_server, admin_pc, make_pc)
    archive = write_archive(tmp_path / "b.tar.gz")
    size = archive.stat().st_size
    with ServerConnection(live_server.url, agent=signer) as conn:
        status = conn.post(f"agent/tickets/{number}/uploads",
                           json={"filename": "b.tar.gz", "size": size, "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()})
        with pytest.raises(DamagedError):
            conn.request("PUT", f"uploads/{status['id']}/chunks/0", content=archive.read_bytes(),
                         headers={"X-Chunk-SHA256": "0" * 64, "Content-Type": "application/octet-stream"})


def test_other_pc_cannot_touch_an_upload(live_server, admin_pc, make_pc, tmp_path):
    number, pc, signer = paired_pc(live_server, admin_pc, make_pc)
    _, other, other_signer = paired_pc(live_server, admin_pc, make_pc, "other")
    archive = write_archive(tmp_path / "b.tar.gz")
    size, digest = sha256_file(archive)
    with ServerConnection(live_server.url, agent=signer) as conn:
        status = conn.post(f"agent/tickets/{number}/uploads", json={"filename": "b.tar.gz", "size": size, "sha256": digest})
    with ServerConnection(live_server.url, agent=other_signer) as conn:
        with pytest.raises(NotFoundError):
            conn.get(f"uploads/{status['id']}")
        with pytest.raises(NotFoundError):  # not linked to that ticket
            conn.post(f"agent/tickets/{number}/uploads", json={"filename": "b.tar.gz", "size": size, "sha256": digest})


def test_abandoned_uploads_are_swept(server_factory, make_pc, tmp_path):
    server = server_factory(upload_ttl_hours="0.0005", upload_sweep_seconds="0.5", upload_chunk_bytes=str(CHUNK))  # 1.8 s
    admin = make_pc("admin")
    admin.login(server)
    number, pc, signer = paired_pc(server, admin, make_pc)
    archive = write_archive(tmp_path / "b.tar.gz", payload=3 * CHUNK)
    size = archive.stat().st_size

    def abandon(sent: int, total: int) -> None:
        if sent >= 2 * CHUNK:
            raise KeyboardInterrupt

    entry = upload.enqueue(archive, number, server.url, directory=pc.agent_dir)
    with pytest.raises(KeyboardInterrupt):
        upload.deliver(entry, signer, directory=pc.agent_dir, policy=FAST, progress=abandon)
    chunks_dir = server.data_dir / "blobs" / "uploads"
    assert any(p.is_file() for p in chunks_dir.rglob("*"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and chunks_dir.exists() and any(p.is_file() and "@" not in p.name for p in chunks_dir.rglob("*")):
        time.sleep(0.2)
    assert not chunks_dir.exists() or not any(p.is_file() and "@" not in p.name for p in chunks_dir.rglob("*"))

    def forgotten() -> bool:
        # The sweep deletes the chunks' blobs first and the upload's row after them (server.uploads.sweep_expired):
        # for a moment the row outlives the files.
        with ServerConnection(server.url, agent=signer) as conn:
            try:
                conn.get(f"uploads/{upload.pending(pc.agent_dir)[0].upload_id}")
            except NotFoundError:
                return True
        return False

    wait_for(forgotten, "the server to forget the abandoned upload", seconds=20, every=0.2)
    # The PC still has the bundle and sends it again from the start.
    bundle = upload.deliver(upload.pending(pc.agent_dir)[0], signer, directory=pc.agent_dir, policy=FAST)
    assert bundle.size == size
