"""Server backups with blobs in an S3-compatible bucket (moto on loopback): the objects are copied into the
backup and restored into another bucket; a bucket that holds blobs already is not written over without force;
archives that are not backups are refused before anything is written."""

from __future__ import annotations

import io
import json
import secrets
import tarfile
from datetime import UTC, datetime

import pytest

from protocol.errors import ConflictError, DamagedError
from server.backup import create_backup, restore_backup
from server.blobs import blob_store
from server.migrate import upgrade
from server.runtime import build_runtime
from server.settings import load_settings
from tests.support.s3 import moto_server, s3_bucket  # noqa: F401 - fixtures

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def toml_blobs(settings: dict[str, str]) -> str:
    return "[blobs]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())


def s3_server(folder, blobs: dict[str, str]):
    """A set-up server (schema, signing key) whose blobs live in the bucket ``blobs`` names; its config path."""
    folder.mkdir(parents=True)
    config = folder / "server.toml"
    config.write_text(f"data_dir = {json.dumps(str(folder))}\nsecret_key = {json.dumps(secrets.token_urlsafe(40))}\n"
                      + toml_blobs(blobs))
    runtime = build_runtime(load_settings(config))
    upgrade(runtime.engine)
    runtime.engine.dispose()
    return config


def test_s3_blobs_are_backed_up_and_restored_into_another_bucket(tmp_path, moto_server, s3_bucket):  # noqa: F811
    config = s3_server(tmp_path / "old", moto_server.blob_settings(s3_bucket))
    settings = load_settings(config)
    source = blob_store(settings.blobs)
    objects = {"bundles/a/b.tar.gz": secrets.token_bytes(200_000), "snapshots/agent-1/data/00/abc": b"pack"}
    for key, data in objects.items():
        source.put(key, data)
    made = create_backup(settings, tmp_path / "b.tar", now=NOW, config_path=config)
    assert (made.blobs, made.blob_bytes) == (2, sum(map(len, objects.values())))

    target_bucket = moto_server.create_bucket()
    new = tmp_path / "new"
    new.mkdir()
    (new / "server.toml").write_text(f"data_dir = {json.dumps(str(new))}\nsecret_key = {json.dumps('x' * 40)}\n"
                                     + toml_blobs(moto_server.blob_settings(target_bucket)))
    restored = restore_backup(made.path, new)
    target = blob_store(restored.blobs)
    assert sorted(target.iter_keys("")) == sorted(objects)
    assert all(target.open(key).read() == data for key, data in objects.items())
    assert restored.resolved_signing_key_file.read_bytes() == settings.resolved_signing_key_file.read_bytes()

    # The source bucket still holds its blobs: restoring over it is refused unless forced.
    other = tmp_path / "other"
    other.mkdir()
    (other / "server.toml").write_text(f"data_dir = {json.dumps(str(other))}\nsecret_key = {json.dumps('y' * 40)}\n"
                                       + toml_blobs(moto_server.blob_settings(s3_bucket)))
    with pytest.raises(ConflictError, match="blob store is not empty"):
        restore_backup(made.path, other)
    assert not (other / "server-signing-key.pem").exists()
    restore_backup(made.path, other, force=True)
    assert (other / "server-signing-key.pem").exists()


def test_a_backup_file_is_private_and_never_overwritten(tmp_path):
    settings = load_settings(None, data_dir=tmp_path / "data", secret_key=secrets.token_urlsafe(40))
    runtime = build_runtime(settings)
    upgrade(runtime.engine)
    runtime.engine.dispose()
    made = create_backup(settings, tmp_path / "b.tar", now=NOW)
    assert made.path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConflictError):
        create_backup(settings, made.path, now=NOW)


@pytest.mark.parametrize("content", ["not-a-tar", "no-manifest", "twice"], ids=["not-a-tar", "no-manifest", "twice"])
def test_what_is_not_a_backup_is_refused_and_nothing_written(tmp_path, content):
    archive = tmp_path / "x.tar"
    if content == "not-a-tar":
        archive.write_bytes(b"hello" * 1000)
    else:
        with tarfile.open(archive, "w") as tar:
            for _ in range(2 if content == "twice" else 1):
                info = tarfile.TarInfo("keys/server-signing-key.pem")
                info.size = 3
                tar.addfile(info, io.BytesIO(b"key"))
    with pytest.raises(DamagedError):
        restore_backup(archive, tmp_path / "data")
    assert not (tmp_path / "data").exists()
