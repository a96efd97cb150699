"""Bundle uploads through the API: chunks, completion, and expiry by the clock."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest

from server.db import transaction
from server.uploads import sweep_expired
from tests.support.bundles import write_archive


@pytest.fixture
def server_settings(server_settings):
    return server_settings.model_copy(update={"upload_chunk_bytes": 64 * 1024, "upload_ttl_hours": 2.0})


@pytest.fixture
def paired(helpline):
    """An engineer's token, a ticket, and an enrolled PC linked to it."""
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    pc = helpline.enrolled_pc()
    code = helpline.pairing_code(engineer, number)["code"]
    helpline.ok("POST", "pair", pc, json={"code": code, **pc.key.signed("pair", "code", code)})
    return engineer, number, pc


def start(helpline, pc, number: str, data: bytes) -> dict:
    body = {"filename": "bundle.tar.gz", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return helpline.ok("POST", f"agent/tickets/{number}/uploads", pc, json=body)


def put_chunk(helpline, pc, upload: dict, index: int, data: bytes):
    chunk = data[index * upload["chunk_size"]:(index + 1) * upload["chunk_size"]]
    return helpline.call("PUT", f"uploads/{upload['id']}/chunks/{index}", pc, content=chunk,
                         headers={"X-Chunk-SHA256": hashlib.sha256(chunk).hexdigest(),
                                  "Content-Type": "application/octet-stream"})


def test_a_bundle_arrives_in_chunks_and_joins_the_ticket(helpline, clock, paired, tmp_path):
    engineer, number, pc = paired
    data = write_archive(tmp_path / "b.tar.gz", payload=150_000).read_bytes()
    upload = start(helpline, pc, number, data)
    assert upload["chunks"] == -(-len(data) // (64 * 1024)) and upload["received"] == []
    assert datetime.fromisoformat(upload["expires_at"]) == clock() + timedelta(minutes=helpline.settings.uploads.idle_minutes)
    for index in reversed(range(upload["chunks"])):
        assert put_chunk(helpline, pc, upload, index, data).status_code == 200
    clock.advance(minutes=5)
    bundle = helpline.ok("POST", f"uploads/{upload['id']}/complete", pc)
    assert bundle["size"] == len(data) and datetime.fromisoformat(bundle["created_at"]) == clock()
    archive = helpline.call("GET", f"bundles/{bundle['id']}/archive", engineer)
    assert archive.content == data
    assert list(helpline.runtime.blobs.iter_keys("uploads/")) == []  # the chunks are gone


def test_an_upload_expires_by_the_clock_and_is_swept(helpline, clock, paired, tmp_path):
    _, number, pc = paired
    data = write_archive(tmp_path / "b.tar.gz", payload=100_000).read_bytes()
    upload = start(helpline, pc, number, data)
    assert put_chunk(helpline, pc, upload, 0, data).status_code == 200
    clock.advance(hours=2)
    late = put_chunk(helpline, pc, upload, 1, data)
    assert late.status_code == 409 and late.json()["error"]["message"] == "This upload has expired."
    # Starting again makes a new upload instead of resuming the expired one.
    assert start(helpline, pc, number, data)["id"] != upload["id"]
    with transaction(helpline.runtime.sessions) as session:
        assert sweep_expired(session, helpline.runtime.blobs, now=clock()) == 1
    assert [k for k in helpline.runtime.blobs.iter_keys("uploads/") if upload["id"] in k] == []
