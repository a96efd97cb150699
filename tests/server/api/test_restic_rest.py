"""The server-side restic repositories in-process: credentials, restic's REST protocol, append-only, quota,
the prune fence and the trash. tests/e2e/test_restic_rest.py drives the same with the real restic."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from protocol.errors import InvalidInputError, UnavailableError
from server.api import restic_rest
from server.db import transaction
from server.models import ResticCredential, ResticObject, ResticRepository
from server.restic_rest import backend, credentials, hooks, prune
from server.settings import SnapshotSettings

V2 = "application/vnd.x.restic.rest.v2"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Repo:
    """restic's side of one credential: requests under the repository's path with HTTP Basic."""

    helpline: object
    url: str

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def auth(self) -> dict[str, str]:
        parts = urlsplit(self.url)
        token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def __call__(self, method: str, rel: str = "", headers: dict | None = None, **kwargs) -> httpx.Response:
        return self.helpline.http.request(method, self.path + rel, headers={**self.auth, **(headers or {})}, **kwargs)

    def put(self, type_: str, data: bytes, name: str | None = None) -> httpx.Response:
        return self("POST", f"{type_}/{name or sha(data)}", content=data)

    def names(self, type_: str) -> list[str]:
        response = self("GET", f"{type_}/")
        assert response.status_code == 200, response.text
        return response.json()


def credential(helpline, pc, purpose: str = "backup", **extra) -> dict:
    return helpline.ok("POST", "agent/snapshots/credential", pc, json={"purpose": purpose, **extra})


def repo(helpline, pc, purpose: str = "backup") -> Repo:
    return Repo(helpline, credential(helpline, pc, purpose)["url"])


def admin_repo(helpline, agent_id: str) -> Repo:
    with transaction(helpline.runtime.sessions) as session:
        _, url = credentials.issue_admin(session, helpline.settings.snapshots, agent_id, base_url="http://testserver",
                                         purpose="test", now=helpline.clock())
    return Repo(helpline, url)


def usage(helpline, agent_id: str) -> int:
    with helpline.db() as session:
        return session.get(ResticRepository, agent_id).bytes


def stored_keys(helpline, agent_id: str) -> list[str]:
    return list(helpline.runtime.blobs.iter_keys(f"snapshots/{agent_id}/"))


@pytest.fixture
def pc(helpline):
    return helpline.enrolled_pc("pc-backup")


# --- credentials -------------------------------------------------------------------------------


def test_a_pc_gets_append_for_backup_and_read_for_restore_of_its_own_repository(helpline, pc):
    now = helpline.clock()
    backup = credential(helpline, pc, "backup")
    check = credential(helpline, pc, "check")
    restore = credential(helpline, pc, "restore")
    assert (backup["mode"], check["mode"], restore["mode"]) == ("append", "append", "read")
    assert backup["agent_id"] == pc.agent_id
    parts = urlsplit(backup["url"])
    assert parts.scheme == "http" and parts.username.startswith("hr-") and len(parts.password) >= 40
    assert parts.path == f"/v1/restic/{pc.agent_id}/"
    assert backup["expires_at"].startswith((now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"))
    assert restore["expires_at"].startswith((now + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M"))
    events = helpline.audit("restic.credential.issue")
    assert [e.details["mode"] for e in events] == ["append", "append", "read"]
    assert all(parts.password not in json.dumps(e.details) for e in events)
    with helpline.db() as session:  # stored as a digest only
        hashes = list(session.scalars(select(ResticCredential.secret_hash)))
    assert sha(parts.password.encode()) in hashes and parts.password not in hashes


def test_the_public_url_setting_names_the_server_in_repository_urls(helpline, pc):
    helpline.runtime.settings.snapshots = SnapshotSettings(public_url="https://backup.example.com:8443/helpline/")
    url = credential(helpline, pc)["url"]
    assert url.startswith("https://hr-") and url.endswith(f"@backup.example.com:8443/helpline/v1/restic/{pc.agent_id}/")


def test_another_pcs_repository_is_refused_without_a_replacement_restore(helpline, pc):
    other = helpline.enrolled_pc("pc-other")
    refused = helpline.call("POST", "agent/snapshots/credential", pc, json={"purpose": "restore", "agent_id": other.agent_id})
    assert refused.status_code == 403 and "its own snapshots only" in refused.json()["error"]["message"]
    refused = helpline.call("POST", "agent/snapshots/credential", pc,
                            json={"purpose": "restore", "request_id": "8d1c2b7a-0000-4000-8000-000000000001"})
    assert refused.status_code == 403 and "replacement-restore request" in refused.json()["error"]["message"]
    refused = helpline.call("POST", "agent/snapshots/credential", pc, json={"purpose": "backup", "request_id": "r-1"})
    assert refused.status_code == 403
    unsigned = helpline.call("POST", "agent/snapshots/credential", json={"purpose": "backup"})
    assert unsigned.status_code == 401


def test_a_replacement_restore_gives_read_mode_on_the_source_repository(helpline, pc, monkeypatch):
    old = helpline.enrolled_pc("pc-dead")
    seen = []

    def source(session, caller, request_id):
        seen.append((caller.id, request_id))
        return old.agent_id

    monkeypatch.setattr(hooks, "_provided", lambda module, name: source if name == "replacement_source" else None)
    answer = credential(helpline, pc, "restore", request_id="req-1")
    assert answer["agent_id"] == old.agent_id and answer["mode"] == "read"
    assert seen == [(pc.agent_id, "req-1")]
    assert helpline.audit("restic.credential.issue")[-1].details["request_id"] == "req-1"


def test_turned_off_the_server_issues_nothing_and_serves_nothing(helpline, pc):
    repository = repo(helpline, pc)
    helpline.runtime.settings.snapshots = SnapshotSettings(enabled=False)
    refused = helpline.call("POST", "agent/snapshots/credential", pc, json={"purpose": "backup"})
    assert refused.status_code == 503 and "turned off" in refused.json()["error"]["message"]
    assert repository("GET", "keys/").status_code == 503


# --- the REST protocol ----------------------------------------------------------------------------


def test_restic_round_trip_config_objects_listing_and_ranges(helpline, pc):
    r = repo(helpline, pc)
    assert r("POST", "?create=true").status_code == 200
    assert r("HEAD", "config").status_code == 404
    assert r("POST", "config", content=b"config-bytes").status_code == 200
    head = r("HEAD", "config")
    assert head.status_code == 200 and head.headers["content-length"] == "12"
    assert r("GET", "config").content == b"config-bytes"
    assert r("POST", "config", content=b"config-bytes").status_code == 200  # identical: as restic expects
    changed = r("POST", "config", content=b"another-config")
    assert changed.status_code == 409 and "never replaced" in changed.json()["error"]["message"]

    pack = os.urandom(3 * 1024 * 1024 + 17)
    assert r.put("data", pack).status_code == 200
    assert r.put("data", pack).status_code == 200  # a retried upload after a lost answer
    replaced = r.put("data", b"other bytes", name=sha(pack))
    assert replaced.status_code == 409 and "never replaced" in replaced.json()["error"]["message"]
    name = sha(pack)
    assert r("HEAD", f"data/{name}").headers["content-length"] == str(len(pack))
    assert r("GET", f"data/{name}").content == pack
    part = r("GET", f"data/{name}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == pack[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(pack)}"
    tail = r("GET", f"data/{name}", headers={"Range": f"bytes={len(pack) - 5}-"})
    assert tail.status_code == 206 and tail.content == pack[-5:]
    assert r("GET", f"data/{name}", headers={"Range": f"bytes={len(pack)}-"}).status_code == 416
    assert r.names("data") == [name]
    listed = r("GET", "data/", headers={"Accept": V2})
    assert listed.headers["content-type"].startswith(V2) and listed.json() == [{"name": name, "size": len(pack)}]
    assert r.names("index") == []
    assert usage(helpline, pc.agent_id) == len(pack) + len(b"config-bytes")



@pytest.mark.parametrize("path", ["in-memory", "streamed"])
def test_ranges_of_a_stored_object_on_both_read_paths(helpline, pc, monkeypatch, path):
    """Short reads are answered from memory, long ones streamed in pieces read ahead: both answer every range alike."""
    streamed = []
    if path == "streamed":
        monkeypatch.setattr(restic_rest, "SMALL_READ", 1000)
        monkeypatch.setattr(backend, "PIECE", 4096)  # many pieces, so reading ahead spans piece boundaries
        read_ahead = backend.read_ahead
        monkeypatch.setattr(backend, "read_ahead", lambda *args, **kw: streamed.append(args[2]) or read_ahead(*args, **kw))
    r = repo(helpline, pc)
    assert r("POST", "?create=true").status_code == 200
    pack = os.urandom(64 * 1024 + 17)
    size, name = len(pack), sha(pack)
    assert r.put("data", pack).status_code == 200

    def get(range_: str | None) -> httpx.Response:
        return r("GET", f"data/{name}", headers={"Range": range_} if range_ else None)

    whole = get(None)
    assert whole.status_code == 200 and whole.content == pack and whole.headers["content-length"] == str(size)
    for header, start, end in [
        ("bytes=0-0", 0, 0),
        ("bytes=100-5099", 100, 5099),  # a single range
        ("bytes=4095-8192", 4095, 8192),  # across piece boundaries
        (f"bytes=1-{size + 1000}", 1, size - 1),  # the end is cut to the object's
        ("bytes=60000-", 60000, size - 1),  # open-ended
        ("bytes=-5000", size - 5000, size - 1),  # the last 5000 bytes
        (f"bytes=-{size * 2}", 0, size - 1),  # a suffix longer than the object: all of it
    ]:
        part = get(header)
        assert part.status_code == 206, header
        assert part.content == pack[start : end + 1], header
        assert part.headers["content-range"] == f"bytes {start}-{end}/{size}", header
        assert part.headers["content-length"] == str(end - start + 1), header
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0", "bytes=500-400"):
        refused = get(header)
        assert refused.status_code == 416, header
        assert refused.headers["content-range"] == f"bytes */{size}", header
    assert get("bytes=0-9,20-29").content == pack  # several ranges: the whole object, as HTTP allows
    assert get("items=0-9").content == pack
    missing = r("GET", f"data/{sha(b'never stored')}", headers={"Range": "bytes=0-9"})
    assert missing.status_code == 404
    assert streamed == ([size, 5000, 4098, size - 1, size - 60000, 5000, size, size, size] if path == "streamed" else [])


class _Stream(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.reads = 0
        self.closing = threading.Event()  # set by whichever thread closes it

    def close(self) -> None:
        super().close()
        self.closing.set()

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return super().read(size)


def _pieces(stream: _Stream, length: int, take: int | None = None) -> list[bytes]:
    async def run() -> list[bytes]:
        got: list[bytes] = []
        chunks = backend.read_ahead(stream, backend.config_target(AGENT), length, piece=10)
        try:
            async for data in chunks:
                got.append(data)
                if take is not None and len(got) == take:
                    break
        finally:
            await chunks.aclose()
        return got

    return asyncio.run(run())


AGENT = "0b6f0e8a-7a33-4e1b-9a4e-3d1f6c2d1a10"


def test_reading_ahead_gives_the_span_in_pieces_and_closes_the_stream():
    stream = _Stream(bytes(range(100)))
    assert _pieces(stream, 35) == [bytes(range(0, 10)), bytes(range(10, 20)), bytes(range(20, 30)), bytes(range(30, 35))]
    assert stream.closed and stream.reads == 4  # never past the span


def test_reading_ahead_closes_the_stream_when_the_reader_goes_away():
    stream = _Stream(bytes(100))
    assert len(_pieces(stream, 100, take=2)) == 2
    assert stream.closing.wait(timeout=30)  # closed by the thread reading ahead, once its read ends
    assert stream.reads <= 3  # at most the one piece read ahead


def test_reading_ahead_refuses_an_object_shorter_than_listed():
    stream = _Stream(bytes(25))
    with pytest.raises(UnavailableError, match="shorter in the blob store"):
        _pieces(stream, 40)
    assert stream.closed

def test_names_types_and_repositories_are_checked_before_anything_is_built_from_them(helpline, pc):
    r = repo(helpline, pc)
    good = sha(b"x")
    for rel in (f"nonsense/{good}", f"data/{good.upper()}", "data/abc", f"data/{good}0", "config/"):
        assert r("GET", rel).status_code == 404, rel
    assert r("POST", "..%2Fconfig", content=b"x").status_code in (404, 405)
    wrong = helpline.http.get(f"/v1/restic/not-an-agent/keys/", headers=r.auth)
    assert wrong.status_code == 404
    assert stored_keys(helpline, pc.agent_id) == []


def test_an_object_whose_content_does_not_match_its_name_is_refused_and_not_kept(helpline, pc):
    r = repo(helpline, pc)
    data = os.urandom(2 * 1024 * 1024)
    refused = r.put("data", data, name=sha(b"something else"))
    assert refused.status_code == 422 and "does not match its name" in refused.json()["error"]["message"]
    assert r("HEAD", f"data/{sha(b'something else')}").status_code == 404
    assert stored_keys(helpline, pc.agent_id) == [] and usage(helpline, pc.agent_id) == 0
    snapshot = b'{"time": "2026-03-02T09:00:00Z"}'
    assert r.put("snapshots", snapshot, name=sha(b"x")).status_code == 422
    short = r("POST", f"data/{sha(data)}", content=data, headers={"Content-Length": str(len(data) + 10)})
    assert short.status_code >= 400 and stored_keys(helpline, pc.agent_id) == []


def test_the_pc_cannot_delete_or_replace_history_only_its_own_locks(helpline, pc):
    r = repo(helpline, pc)
    objects = {t: os.urandom(1000) for t in ("data", "keys", "snapshots", "index")}
    for type_, data in objects.items():
        assert r.put(type_, data).status_code == 200
    for type_, data in objects.items():
        refused = r("DELETE", f"{type_}/{sha(data)}")
        assert refused.status_code == 403 and "append-only" in refused.json()["error"]["message"], type_
        assert r("GET", f"{type_}/{sha(data)}").content == data
    refusals = helpline.audit("restic.delete.refused")
    assert len(refusals) == 4 and {e.actor_id for e in refusals} == {pc.agent_id}
    assert {e.ip for e in refusals} == {"192.0.2.10"}
    lock = os.urandom(200)
    assert r.put("locks", lock).status_code == 200
    assert r("DELETE", f"locks/{sha(lock)}").status_code == 200
    assert r.names("locks") == []
    server_lock = os.urandom(200)
    assert admin_repo(helpline, pc.agent_id).put("locks", server_lock).status_code == 200
    assert r("DELETE", f"locks/{sha(server_lock)}").status_code == 403
    assert r.names("locks") == [sha(server_lock)]


def test_a_read_credential_reads_and_writes_nothing(helpline, pc):
    writer = repo(helpline, pc)
    data = os.urandom(500)
    writer.put("data", data)
    reader = repo(helpline, pc, "restore")
    assert reader("GET", f"data/{sha(data)}").content == data
    assert reader.names("data") == [sha(data)]
    for response in (reader.put("locks", b"lock"), reader("DELETE", f"data/{sha(data)}"),
                     reader("POST", "?create=true"), reader("POST", "config", content=b"c")):
        assert response.status_code == 403 and "only reads" in response.json()["error"]["message"]


def test_expired_foreign_malformed_and_revoked_credentials_are_refused(helpline, pc):
    r = repo(helpline, pc)
    other = repo(helpline, helpline.enrolled_pc("pc-other"))
    foreign = Repo(helpline, other.url.replace(other.path, r.path))
    refused = foreign("GET", "keys/")
    assert refused.status_code == 403 and "another PC's repository" in refused.json()["error"]["message"]
    assert helpline.http.get(r.path + "keys/").status_code == 401
    bad = helpline.http.get(r.path + "keys/", headers={"Authorization": "Basic " + base64.b64encode(b"hr-00:nope").decode()})
    assert bad.status_code == 401 and bad.headers["www-authenticate"].startswith("Basic")
    assert helpline.http.get(r.path + "keys/", headers={"Authorization": "Basic %%%"}).status_code == 401
    assert r("GET", "keys/").status_code == 200
    helpline.clock.advance(minutes=121)
    expired = r("GET", "keys/")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    fresh = repo(helpline, pc)
    helpline.ok("POST", f"agents/{pc.agent_id}/revoke", helpline.admin(), json={"reason": "stolen"})
    assert fresh("GET", "keys/").status_code == 401


def test_the_quota_refuses_with_a_clear_message_and_keeps_nothing(helpline, pc):
    helpline.runtime.settings.snapshots = SnapshotSettings(quota_bytes=10_000)
    r = repo(helpline, pc)
    assert r.put("data", os.urandom(6_000)).status_code == 200
    big = os.urandom(6_000)
    refused = r.put("data", big)
    assert refused.status_code == 507
    assert "repository on the server is full: 6000 of 10000 bytes" in refused.json()["error"]["message"]
    assert usage(helpline, pc.agent_id) == 6_000 and len(stored_keys(helpline, pc.agent_id)) == 1
    assert r.put("data", os.urandom(4_000)).status_code == 200


def test_a_snapshot_refused_by_the_check_is_not_stored(helpline, pc, monkeypatch):
    r = repo(helpline, pc)
    accepted = os.urandom(300)
    assert r.put("snapshots", accepted).status_code == 200  # no check provided yet: accepted
    seen = []

    def check(session, agent_id, data, now):
        seen.append((agent_id, data))
        raise InvalidInputError("That snapshot is dated in the future.")

    monkeypatch.setattr(hooks, "_provided", lambda module, name: check if name == "check_snapshot_upload" else None)
    refused_data = os.urandom(300)
    refused = r.put("snapshots", refused_data)
    assert refused.status_code == 422 and "future" in refused.json()["error"]["message"]
    assert seen == [(pc.agent_id, refused_data)]
    assert r.names("snapshots") == [sha(accepted)]


# --- prune fence and trash -----------------------------------------------------------------------


def fence(helpline, agent_id: str) -> None:
    with helpline.db() as session:
        session.get(ResticRepository, agent_id).fenced_at = helpline.clock()


def test_while_fenced_the_pc_uploads_nothing_and_the_server_sees_only_its_own_locks(helpline, pc):
    r = repo(helpline, pc)
    pc_lock = os.urandom(100)
    r.put("locks", pc_lock)
    fence(helpline, pc.agent_id)
    for type_ in ("locks", "data", "snapshots"):
        refused = r.put(type_, os.urandom(100))
        assert refused.status_code == 423 and "pruning" in refused.json()["error"]["message"], type_
    admin = admin_repo(helpline, pc.agent_id)
    server_lock = os.urandom(100)
    assert admin.put("locks", server_lock).status_code == 200
    assert admin.names("locks") == [sha(server_lock)]
    assert sorted(r.names("locks")) == sorted([sha(pc_lock), sha(server_lock)])
    assert r("DELETE", f"locks/{sha(pc_lock)}").status_code == 200  # restic can still unlock


def test_the_servers_deletions_go_to_the_trash_and_leave_it_after_trash_days(helpline, pc):
    r = repo(helpline, pc)
    kept, dropped = os.urandom(1000), os.urandom(2000)
    r.put("data", kept)
    r.put("data", dropped)
    admin = admin_repo(helpline, pc.agent_id)
    assert admin("DELETE", f"data/{sha(dropped)}").status_code == 200
    assert admin("DELETE", f"data/{sha(dropped)}").status_code == 200  # a retried DELETE
    assert r.names("data") == [sha(kept)] and r("HEAD", f"data/{sha(dropped)}").status_code == 404
    assert usage(helpline, pc.agent_id) == 1000
    assert len(stored_keys(helpline, pc.agent_id)) == 2  # the blob waits in the trash
    assert "removed 0 trashed" in prune.empty_trash(helpline.runtime)
    helpline.clock.advance(days=7, minutes=1)
    assert "removed 1 trashed" in prune.empty_trash(helpline.runtime)
    assert len(stored_keys(helpline, pc.agent_id)) == 1


def test_an_upload_brings_a_trashed_object_back(helpline, pc):
    r = repo(helpline, pc)
    data = os.urandom(1000)
    r.put("index", data)
    admin_repo(helpline, pc.agent_id)("DELETE", f"index/{sha(data)}")
    assert r.names("index") == []
    assert r.put("index", data).status_code == 200
    assert r.names("index") == [sha(data)] and usage(helpline, pc.agent_id) == 1000
    helpline.clock.advance(days=8)
    assert "removed 0 trashed" in prune.empty_trash(helpline.runtime)
    assert repo(helpline, pc)("GET", f"index/{sha(data)}").content == data


def test_locks_deleted_by_the_server_are_gone_at_once(helpline, pc):
    admin = admin_repo(helpline, pc.agent_id)
    lock = os.urandom(100)
    admin.put("locks", lock)
    assert admin("DELETE", f"locks/{sha(lock)}").status_code == 200
    assert stored_keys(helpline, pc.agent_id) == []


def test_the_prune_fences_waits_for_stale_pc_locks_and_lifts_the_fence(helpline, pc, monkeypatch):
    runtime = helpline.runtime
    repo(helpline, pc)
    monkeypatch.setattr(hooks, "_provided", lambda module, name: (lambda s, a: "pw") if name == "escrowed_password" else None)
    runs = []
    monkeypatch.setattr(prune, "run_restic", lambda settings, url, password, args: runs.append((url, password, args)) or (True, "done"))
    assert prune.prune_repositories(runtime) == "no repository due"
    helpline.clock.advance(hours=168)
    assert repo(helpline, pc).put("locks", os.urandom(100)).status_code == 200  # a backup is running
    assert prune.prune_repositories(runtime) == "1 waiting"
    with helpline.db() as session:
        assert session.get(ResticRepository, pc.agent_id).fenced_at is None  # waits for a quiet moment first
    helpline.clock.advance(hours=24, minutes=1)
    r = repo(helpline, pc)
    assert r.put("locks", os.urandom(100)).status_code == 200  # fresh locks still: after a day the fence goes up anyway
    assert prune.prune_repositories(runtime) == "1 waiting"
    assert r.put("locks", os.urandom(100)).status_code == 423
    helpline.clock.advance(minutes=31)
    assert prune.prune_repositories(runtime) == "1 pruned"
    [(url, password, args)] = runs
    assert password == "pw" and args[:2] == ["forget", "--prune"]
    assert args[2:] == ["--keep-hourly", "24", "--keep-daily", "7", "--keep-weekly", "4"]
    assert f"/v1/restic/{pc.agent_id}/" in url
    with helpline.db() as session:
        repository = session.get(ResticRepository, pc.agent_id)
        assert repository.fenced_at is None and repository.pruned_at == helpline.clock()
        admin = session.scalar(select(ResticCredential).where(ResticCredential.mode == "admin"))
        assert admin.expires_at <= helpline.clock()
    assert [e.target_id for e in helpline.audit("restic.prune")] == [pc.agent_id]
    assert repo(helpline, pc).put("locks", os.urandom(100)).status_code == 200


def test_the_prune_skips_a_repository_whose_password_the_server_does_not_hold(helpline, pc):
    repo(helpline, pc)
    helpline.clock.advance(hours=169)
    assert prune.prune_repositories(helpline.runtime) == "1 skipped"
    with helpline.db() as session:
        assert session.get(ResticRepository, pc.agent_id).fenced_at is None


def test_the_local_url_for_the_servers_own_restic(server_settings):
    settings = server_settings.model_copy(update={"host": "0.0.0.0", "port": 8700})
    assert prune.local_url(settings) == "http://127.0.0.1:8700"
    settings = server_settings.model_copy(update={"host": "::", "port": 8700})
    assert prune.local_url(settings) == "http://[::1]:8700"
    settings = server_settings.model_copy(update={"snapshots": SnapshotSettings(local_url="https://backup.lan:9/")})
    assert prune.local_url(settings) == "https://backup.lan:9"


def test_objects_rows_are_the_listing(helpline, pc):
    r = repo(helpline, pc)
    r.put("keys", b"key-file")
    with helpline.db() as session:
        [row] = session.scalars(select(ResticObject))
    assert (row.type, row.name, row.size, row.created_by) == ("keys", sha(b"key-file"), 8, "append")


def test_an_upload_cut_off_midway_keeps_nothing_and_gives_back_its_reservation(helpline, pc):
    r = repo(helpline, pc)
    data = os.urandom(3 * 1024 * 1024)

    def cut_off():
        yield data[: 1024 * 1024]
        raise ConnectionError("restic was stopped")

    try:
        answer = r("POST", f"data/{sha(data)}", content=cut_off(), headers={"Content-Length": str(len(data))})
    except ConnectionError:
        answer = None
    assert answer is None or answer.status_code >= 400
    assert stored_keys(helpline, pc.agent_id) == [] and usage(helpline, pc.agent_id) == 0
    assert r("HEAD", f"data/{sha(data)}").status_code == 404
    assert r.put("data", data).status_code == 200


def test_recently_checked_credentials_skip_the_database_for_seconds_only(helpline, pc, monkeypatch):
    r = repo(helpline, pc)
    assert r("GET", "keys/").status_code == 200
    helpline.ok("POST", f"agents/{pc.agent_id}/revoke", helpline.admin(), json={"reason": "stolen"})
    assert r("GET", "keys/").status_code == 200  # checked a moment ago: within the window
    later = credentials.time.monotonic() + credentials.recent_grants.seconds
    monkeypatch.setattr(credentials.time, "monotonic", lambda: later)
    assert r("GET", "keys/").status_code == 401
