"""Upload quotas through the API: per PC, for the whole server, idle expiry, a full disk, closed tickets.

Every refusal here must be a clear error with its documented status, audited,
and must leave what is already stored downloadable.
"""

from __future__ import annotations

import errno
import hashlib
import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from protocol.errors import ExitStatus, QuotaExceededError, StorageFullError, error_class_for
from server.blobs import BlobStore
from server.jobs import sweep_uploads
from server.models import Upload, UploadChunk
from tests.server.api.test_uploads import put_chunk, start
from tests.support.bundles import write_archive

MIB = 1 << 20


def quotas(settings, **changes):
    return settings.model_copy(update={"uploads": settings.uploads.model_copy(update=changes)})


@pytest.fixture
def server_settings(server_settings):
    settings = server_settings.model_copy(update={"upload_chunk_bytes": 64 * 1024, "max_bundle_bytes": 512 * MIB})
    return quotas(settings, min_free_bytes=0)


def pair(helpline, engineer: str, number: str, hostname: str = "pc-1"):
    pc = helpline.enrolled_pc(hostname)
    code = helpline.pairing_code(engineer, number)["code"]
    helpline.ok("POST", "pair", pc, json={"code": code, **pc.key.signed("pair", "code", code)})
    return pc


@pytest.fixture
def paired(helpline):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    return engineer, number, pair(helpline, engineer, number)


def reserve(helpline, pc, number: str, size: int):
    """Ask to start an upload of ``size`` bytes of a file no one has sent before."""
    body = {"filename": "bundle.tar.gz", "size": size, "sha256": secrets.token_hex(32)}
    return helpline.call("POST", f"agent/tickets/{number}/uploads", pc, json=body)


def deliver(helpline, pc, number: str, data: bytes) -> dict:
    upload = start(helpline, pc, number, data)
    for index in range(upload["chunks"]):
        assert put_chunk(helpline, pc, upload, index, data).status_code == 200
    return helpline.ok("POST", f"uploads/{upload['id']}/complete", pc)


def refused(response, status: int, code: str, cls) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error_class_for(status, code) is cls
    assert "\n" not in error["message"] and error["hint"]
    return error


def unfinished(helpline, agent_id: str | None = None) -> int:
    with helpline.db() as session:
        query = select(func.count(Upload.id)).where(Upload.completed_at.is_(None))
        if agent_id:
            query = query.where(Upload.agent_id == agent_id)
        return session.scalar(query)


def still_there(helpline, engineer: str, bundle: dict, data: bytes) -> None:
    assert helpline.call("GET", f"bundles/{bundle['id']}/archive", engineer).content == data
    assert helpline.call("GET", f"bundles/{bundle['id']}", engineer).status_code == 200


def test_quota_errors_have_documented_exit_statuses():
    assert QuotaExceededError("x").status == ExitStatus.RATE_LIMITED
    assert StorageFullError("x").status == ExitStatus.UNAVAILABLE


@pytest.mark.parametrize("per_pc, max_bytes, allowed", [(4, 1 << 30, 2), (3, 10 << 30, 3)])
def test_a_burst_of_reservations_cannot_overshoot_the_quota(helpline, server_settings, paired, per_pc, max_bytes, allowed):
    helpline.runtime.settings = quotas(server_settings, max_unfinished_per_pc=per_pc, max_unfinished_bytes_per_pc=max_bytes)
    _, number, pc = paired
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda _: reserve(helpline, pc, number, 512 * MIB), range(100)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(201) == allowed and statuses.count(429) == 100 - allowed, statuses
    refused(next(a for a in answers if a.status_code == 429), 429, "quota_exceeded", QuotaExceededError)
    assert unfinished(helpline, pc.agent_id) == allowed
    assert len(helpline.audit("upload.refused")) == 100 - allowed


def test_stored_bytes_per_pc_count_bundles_kept(helpline, server_settings, paired, tmp_path):
    engineer, number, pc = paired
    first = write_archive(tmp_path / "a.tar.gz", payload=100_000).read_bytes()
    helpline.runtime.settings = quotas(server_settings, max_stored_bytes_per_pc=len(first) * 3 // 2)
    bundle = deliver(helpline, pc, number, first)
    second = write_archive(tmp_path / "b.tar.gz", payload=100_000).read_bytes()
    error = refused(reserve(helpline, pc, number, len(second)), 429, "quota_exceeded", QuotaExceededError)
    assert "quota" in error["message"]
    [event] = helpline.audit("upload.refused")
    assert event.target_id == number and event.details["size"] == len(second)
    still_there(helpline, engineer, bundle, first)
    # Another PC has its own quota.
    other = pair(helpline, engineer, number, "pc-2")
    assert deliver(helpline, other, number, second)["size"] == len(second)


def test_idle_unfinished_uploads_expire_in_minutes_and_are_swept(helpline, server_settings, clock, paired, tmp_path):
    helpline.runtime.settings = quotas(server_settings, max_unfinished_per_pc=2, idle_minutes=10)
    _, number, pc = paired
    data = write_archive(tmp_path / "a.tar.gz", payload=200_000).read_bytes()
    active = start(helpline, pc, number, data)
    idle = reserve(helpline, pc, number, 5000).json()
    refused(reserve(helpline, pc, number, 5000), 429, "quota_exceeded", QuotaExceededError)
    for index in range(2):  # chunks keep the active upload alive past the first idle period
        clock.advance(minutes=7)
        assert put_chunk(helpline, pc, active, index, data).status_code == 200
    late = put_chunk(helpline, pc, idle, 0, b"x" * 5000)
    assert late.status_code == 409 and "expired" in late.json()["error"]["message"]
    # The idle one no longer counts, even before the sweep.
    assert reserve(helpline, pc, number, 5000).status_code == 201
    clock.advance(minutes=11)
    assert put_chunk(helpline, pc, active, 2, data).status_code == 409
    kept = reserve(helpline, pc, number, 7000).json()  # within its idle period: the sweep leaves it
    assert "removed 3 expired" in sweep_uploads(helpline.runtime)
    with helpline.db() as session:
        assert session.scalars(select(Upload.id)).all() == [kept["id"]]
        assert session.scalar(select(func.count()).select_from(UploadChunk)) == 0
    assert not [k for k in helpline.runtime.blobs.iter_keys("uploads/") if active["id"] in k]


def test_the_global_cap_on_unfinished_bytes_holds_across_pcs(helpline, server_settings, paired):
    engineer, number, pc = paired
    helpline.runtime.settings = quotas(server_settings, max_unfinished_bytes=300 * MIB)
    assert reserve(helpline, pc, number, 200 * MIB).status_code == 201
    other = pair(helpline, engineer, number, "pc-2")
    refused(reserve(helpline, other, number, 200 * MIB), 507, "storage_full", StorageFullError)
    assert reserve(helpline, other, number, 100 * MIB).status_code == 201
    assert unfinished(helpline) == 2


def test_a_configured_cap_on_all_stored_bytes(helpline, server_settings, paired, tmp_path):
    engineer, number, pc = paired
    data = write_archive(tmp_path / "a.tar.gz", payload=50_000).read_bytes()
    helpline.runtime.settings = quotas(server_settings, max_stored_bytes=len(data) + 10_000)
    bundle = deliver(helpline, pc, number, data)
    other = pair(helpline, engineer, number, "pc-2")
    refused(reserve(helpline, other, number, 20_000), 507, "storage_full", StorageFullError)
    still_there(helpline, engineer, bundle, data)


def test_free_disk_headroom_refuses_reservations_and_chunks(helpline, server_settings, paired, tmp_path):
    engineer, number, pc = paired
    data = write_archive(tmp_path / "a.tar.gz", payload=100_000).read_bytes()
    bundle = deliver(helpline, pc, number, data)
    upload = start(helpline, pc, number, write_archive(tmp_path / "b.tar.gz", payload=100_000).read_bytes())
    free = helpline.runtime.blobs.free_bytes()
    assert free is not None and free > 0
    helpline.runtime.settings = quotas(server_settings, min_free_bytes=free + (1 << 30))
    refused(reserve(helpline, pc, number, 1000), 507, "storage_full", StorageFullError)
    refused(put_chunk(helpline, pc, upload, 0, data), 507, "storage_full", StorageFullError)
    assert len(helpline.audit("upload.refused")) == 2
    still_there(helpline, engineer, bundle, data)


class FullDisk(BlobStore):
    """A blob store whose disk fills up: writes raise ENOSPC while ``full``, reads work as before."""

    def __init__(self, inner: BlobStore):
        self.inner, self.full = inner, False

    def put(self, key, data, *, size_hint=None):
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.inner.put(key, data, size_hint=size_hint)

    def put_file(self, key, path):
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.inner.put_file(key, path)

    def open(self, key):
        return self.inner.open(key)

    def read_range(self, key, start, length):
        return self.inner.read_range(key, start, length)

    def stat(self, key):
        return self.inner.stat(key)

    def exists(self, key):
        return self.inner.exists(key)

    def delete(self, key):
        return self.inner.delete(key)

    def iter_keys(self, prefix=""):
        return self.inner.iter_keys(prefix)

    def check(self):
        return self.inner.check()


def test_a_full_disk_keeps_what_is_stored_and_the_upload_resumes(helpline, paired, tmp_path):
    engineer, number, pc = paired
    disk = FullDisk(helpline.runtime.blobs)
    helpline.runtime.blobs = disk
    first = write_archive(tmp_path / "a.tar.gz", payload=100_000).read_bytes()
    bundle = deliver(helpline, pc, number, first)
    data = write_archive(tmp_path / "b.tar.gz", payload=150_000).read_bytes()
    upload = start(helpline, pc, number, data)
    assert put_chunk(helpline, pc, upload, 0, data).status_code == 200

    disk.full = True
    error = refused(put_chunk(helpline, pc, upload, 1, data), 507, "storage_full", StorageFullError)
    assert "full" in error["message"]
    still_there(helpline, engineer, bundle, first)
    status = helpline.ok("GET", f"uploads/{upload['id']}", pc)
    assert status["received"] == [0]  # the chunk stored before the disk filled is kept

    disk.full = False
    for index in range(1, upload["chunks"]):
        assert put_chunk(helpline, pc, upload, index, data).status_code == 200
    disk.full = True  # the disk fills again just as the bundle is joined: the chunks stay
    refused(helpline.call("POST", f"uploads/{upload['id']}/complete", pc), 507, "storage_full", StorageFullError)
    assert len(helpline.audit("upload.refused")) == 2
    disk.full = False
    second = helpline.ok("POST", f"uploads/{upload['id']}/complete", pc)
    still_there(helpline, engineer, second, data)
    still_there(helpline, engineer, bundle, first)


def close(helpline, engineer: str, number: str) -> None:
    helpline.ok("PATCH", f"tickets/{number}", engineer, json={"status": "closed"})


def test_a_closed_ticket_takes_no_uploads(helpline, paired, tmp_path):
    engineer, number, pc = paired
    first = write_archive(tmp_path / "a.tar.gz", payload=10_000).read_bytes()
    bundle = deliver(helpline, pc, number, first)
    data = write_archive(tmp_path / "b.tar.gz", payload=100_000).read_bytes()
    under_way = start(helpline, pc, number, data)
    close(helpline, engineer, number)
    response = helpline.call("POST", f"agent/tickets/{number}/uploads", pc,
                             json={"filename": "b.tar.gz", "size": 10, "sha256": "0" * 64})
    error = refused(response, 409, "conflict", type(error_class_for(409, "conflict")("x")))
    assert error["message"] == f"{number} is closed; it takes no more diagnostics."
    refused(put_chunk(helpline, pc, under_way, 0, data), 409, "conflict", type(error_class_for(409, "conflict")("x")))
    refused(helpline.call("POST", f"uploads/{under_way['id']}/complete", pc), 409, "conflict",
            type(error_class_for(409, "conflict")("x")))
    events = helpline.audit("upload.refused")
    assert len(events) == 3 and {e.details["reason"] for e in events} == {"ticket closed"}
    assert [b["id"] for b in helpline.ok("GET", f"tickets/{number}/bundles", engineer)] == [bundle["id"]]
    still_there(helpline, engineer, bundle, first)
