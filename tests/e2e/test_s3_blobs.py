"""The server with its blobs in an S3-compatible bucket (moto's server on loopback)."""

from __future__ import annotations


import pytest

from agent import upload
from agent.http import ServerConnection
from agent.store import AgentStore
from tests.support.bundles import write_archive
from tests.support.live import token_of
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, moto_server, s3_bucket  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e


def test_bundle_lands_in_the_bucket_and_comes_back(server_factory, moto_server, s3_bucket, make_pc, tmp_path):  # noqa: F811
    server = server_factory(**moto_server.blob_env(s3_bucket), upload_chunk_bytes=str(128 * 1024))
    admin = make_pc("admin")
    admin.login(server)
    number = admin.ok("ticket", "create", "S3", "--json").json()["number"]
    code = admin.ok("ticket", "pair-code", number, "--json").json()["code"]
    pc = make_pc("user")
    pc.ok("pair", code, "--server", server.url)
    signer = AgentStore(pc.agent_dir).signer()
    archive = write_archive(tmp_path / "b.tar.gz", payload=600_000)
    original = archive.read_bytes()
    bundle = upload.deliver(upload.enqueue(archive, number, server.url, directory=pc.agent_dir), signer,
                            directory=pc.agent_dir)

    keys = [o["Key"] for o in moto_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert keys == [f"bundles/{number}/{bundle.id}.tar.gz"]  # the chunks were cleaned up
    with ServerConnection(server.url, token_of(admin)) as conn:
        response = conn._client.get(f"/v1/bundles/{bundle.id}/archive")
    assert response.content == original
    assert SECRET_KEY not in server.log()
    assert not (server.data_dir / "blobs").exists()


def test_the_flat_blob_settings_of_older_configurations_still_work(server_factory, moto_server, s3_bucket, make_pc):  # noqa: F811
    """HELPLINE_BLOB_BACKEND, HELPLINE_S3_* (the spelling before [blobs]) still put blobs in the bucket."""
    server = server_factory(
        blob_backend="s3", s3_bucket=s3_bucket, s3_endpoint_url=moto_server.url, s3_region=REGION,
        s3_access_key=ACCESS_KEY, s3_secret_key=SECRET_KEY, s3_prefix="old-spelling",
    )
    admin = make_pc("admin")
    admin.login(server)
    number = admin.ok("ticket", "create", "S3 the old way", "--json").json()["number"]
    code = admin.ok("ticket", "pair-code", number, "--json").json()["code"]
    pc = make_pc("user")
    pc.ok("pair", code, "--server", server.url)
    signer = AgentStore(pc.agent_dir).signer()
    archive = write_archive(server.data_dir.parent / "old.tar.gz", payload=1000)
    bundle = upload.deliver(upload.enqueue(archive, number, server.url, directory=pc.agent_dir), signer,
                            directory=pc.agent_dir)
    keys = [o["Key"] for o in moto_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert keys == [f"old-spelling/bundles/{number}/{bundle.id}.tar.gz"]
    assert not (server.data_dir / "blobs").exists()
