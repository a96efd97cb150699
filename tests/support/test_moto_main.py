"""The test S3 endpoint publishes a completed multipart object with its metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.support.s3 import REPO_ROOT


def _metadata_at_publication(patched: bool) -> None:
    """In a fresh process: complete a multipart upload and report the metadata the
    object carried at the moment moto made it visible in the bucket."""
    import boto3
    from moto import mock_aws
    from moto.s3 import utils

    if patched:
        from tests.support.moto_main import _make_multipart_metadata_atomic

        assert _make_multipart_metadata_atomic()
    seen: list[dict[str, str]] = []
    original_setlist = utils._VersionedKeyStore.setlist

    def setlist(self: Any, key: Any, values: Any) -> None:
        seen.extend(dict(value.metadata) for value in values if getattr(value, "multipart", None))
        original_setlist(self, key, values)

    utils._VersionedKeyStore.setlist = setlist  # type: ignore[method-assign]
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="helpline-probe")
        upload = client.create_multipart_upload(Bucket="helpline-probe", Key="k", Metadata={"sha256": "ab" * 32})
        part = client.upload_part(Bucket="helpline-probe", Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 10)
        client.complete_multipart_upload(
            Bucket="helpline-probe", Key="k", UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
        )
        head = client.head_object(Bucket="helpline-probe", Key="k")
    print(json.dumps([seen, head["Metadata"]]))


def _run(patched: bool) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Probe in a fresh interpreter, so that the patch never reaches this one."""
    code = f"from tests.support.test_moto_main import _metadata_at_publication as p; p({patched})"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    seen, head = json.loads(done.stdout.strip().splitlines()[-1])
    return seen, head


def test_completed_multipart_object_is_published_with_its_metadata() -> None:
    seen, head = _run(patched=True)
    assert head.get("sha256") == "ab" * 32
    assert seen and all(entry.get("x-amz-meta-sha256") == "ab" * 32 for entry in seen), seen


def test_unpatched_moto_publishes_before_metadata() -> None:
    """Why the patch exists: if moto ever fixes this, the patch can go."""
    seen, head = _run(patched=False)
    assert head.get("sha256") == "ab" * 32
    assert seen and not any("x-amz-meta-sha256" in entry for entry in seen), seen
