"""Blobs as objects in an S3-compatible bucket (AWS, MinIO, Ceph and the like)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, BinaryIO

from protocol.errors import ConfigError, HelplineError, InvalidInputError, NotFoundError, UnavailableError
from server.blobs.keys import KEY_HINT, SHA256_RE, is_key, quoted, validate_key, validate_prefix
from server.blobs.store import CHUNK_SIZE, MiB, BlobInfo, BlobStore, check_digest, check_range, check_size_hint, chunks_of

_MEMORY_SPOOL_LIMIT = 1 * MiB  # streams up to this size are uploaded from memory
_MIN_PART_SIZE = 5 * MiB  # S3's minimum multipart part size
_ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,254}", re.IGNORECASE)


class _S3Reader(io.RawIOBase):
    """A raw file object over a botocore StreamingBody, translating read errors."""

    def __init__(self, body: Any, translate: Any):
        self._body = body
        self._translate = translate

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from botocore.exceptions import BotoCoreError

        try:
            data = self._body.read(len(buffer))
        except BotoCoreError as exc:
            raise self._translate(exc) from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3BlobStore(BlobStore):
    """Blobs as objects in an S3-compatible bucket: key ``a/b`` is object ``<prefix>a/b``.

    - The sha256 must be known when an upload starts (it is object metadata,
      ``x-amz-meta-sha256``), so a stream is hashed while it is spooled: up to
      1 MiB in memory, beyond that to a temp file in ``spool_dir`` (default: the
      system temp dir). That file is then uploaded in parts of ``part_size``
      (multipart above ``part_size``) read lazily from disk, so memory stays
      bounded. ``put_file`` hashes the file in place and uploads it without a copy;
      the file must not change during the call.
    - S3 writes are atomic per object, so readers never see half a blob.
    - Objects written by other tools have ``sha256`` None in :meth:`stat`.
    - With ``endpoint_url`` (MinIO, Ceph, moto…) path-style addressing is used and
      checksums are only sent when an operation requires them, for compatibility.
    - Credentials left None come from boto3's usual chain (environment, instance
      role). The secret key goes to the boto3 client only: this class does not
      keep it, and it never appears in a repr, an error or a log line.
    - :meth:`check` is a HEAD on the bucket: it proves the bucket exists and the
      credentials are accepted, not that they may write.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        prefix: str = "",
        part_size: int = 8 * MiB,
        max_concurrency: int = 4,
        spool_dir: str | os.PathLike[str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ):
        if not isinstance(bucket, str) or not _BUCKET_RE.fullmatch(bucket):
            raise ConfigError(
                f"invalid S3 bucket name {bucket!r}", hint="set the blob bucket to an existing bucket's name"
            )
        if (access_key is None) != (secret_key is None):
            raise ConfigError(
                "S3 access key and secret key must be set together",
                hint="set both, or neither to use the environment's credentials",
            )
        if endpoint_url is not None and not re.match(r"https?://[^/\s]+", endpoint_url):
            raise ConfigError(f"invalid S3 endpoint URL {endpoint_url!r}", hint="use http://host:port or https://host")
        if part_size < _MIN_PART_SIZE:
            raise ConfigError(f"S3 part size must be at least {_MIN_PART_SIZE} bytes, not {part_size}")
        if prefix:
            try:
                validate_key(prefix.strip("/"))
            except InvalidInputError:
                raise ConfigError(f"invalid S3 key prefix {prefix!r}", hint=KEY_HINT) from None
            prefix = prefix.strip("/") + "/"
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - boto3 is in the [server] extra
            raise ConfigError("S3 blob storage needs boto3", hint="install helpline[server]") from exc

        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self._part_size = part_size
        self._spool_dir = os.fspath(spool_dir) if spool_dir is not None else None
        self._transfer = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_concurrency=max_concurrency,
            use_threads=max_concurrency > 1,
        )
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else None,
            request_checksum_calculation="when_required" if endpoint_url else "when_supported",
            response_checksum_validation="when_required" if endpoint_url else "when_supported",
        )
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r}{where})"

    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _where(self) -> str:
        return f"bucket {self.bucket!r}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    # -- errors

    def _translate(self, exc: BaseException, doing: str, key: str | None = None) -> HelplineError:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
            exc = exc.__context__  # boto3 wraps the ClientError of a failed upload
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket" or (key is None and code in ("404", "NotFound")):
                return UnavailableError(
                    f"S3 {self._where()} does not exist",
                    hint="create the bucket, or set the blob bucket to an existing one",
                )
            if key is not None and code in ("NoSuchKey", "404", "NotFound"):
                return NotFoundError(f"no blob {quoted(key)}")
            if status == 403 or code in _ACCESS_DENIED_CODES:
                return UnavailableError(
                    f"S3 refused access to {self._where()} while {doing} ({code})",
                    hint="check the S3 access key, secret key and bucket policy",
                )
            message = error.get("Message") or ""
            return UnavailableError(f"S3 failed while {doing} in {self._where()}: {code} {message}".rstrip())
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return ConfigError(
                f"no S3 credentials found for {self._where()}",
                hint="set the S3 access key and secret key, or provide credentials in the environment",
            )
        if isinstance(exc, (ConnectionError, HTTPClientError)):
            return UnavailableError(
                f"cannot reach the S3 endpoint for {self._where()} while {doing}",
                hint="check the S3 endpoint URL and that the storage service is running",
            )
        return UnavailableError(f"S3 failed while {doing} in {self._where()}: {exc}")

    @contextmanager
    def _errors(self, doing: str, key: str | None = None) -> Iterator[None]:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise self._translate(exc, doing, key) from exc

    # -- writing

    def put(self, key: str, data: BinaryIO | bytes, *, size_hint: int | None = None,
            expected_sha256: str | None = None) -> BlobInfo:
        name = self._name(key)
        check_size_hint(size_hint)
        if isinstance(data, (bytes, bytearray, memoryview)) and len(data) <= _MEMORY_SPOOL_LIMIT:
            body = bytes(data)
            sha256 = hashlib.sha256(body).hexdigest()
            check_digest(key, expected_sha256, sha256)
            return self._put_bytes(key, name, body, sha256)
        digest = hashlib.sha256()
        chunks = chunks_of(data)
        head = bytearray()
        for chunk in chunks:
            digest.update(chunk)
            head += chunk
            if len(head) > _MEMORY_SPOOL_LIMIT:
                break
        else:
            check_digest(key, expected_sha256, digest.hexdigest())
            return self._put_bytes(key, name, bytes(head), digest.hexdigest())
        try:
            spool = tempfile.NamedTemporaryFile(prefix="helpline-blob-", dir=self._spool_dir)  # noqa: SIM115
        except OSError as exc:
            raise UnavailableError(
                f"cannot spool an upload to {self._spool_dir or tempfile.gettempdir()}: {exc.strerror}",
                hint="make the spool directory writable, or set another one",
            ) from exc
        with spool:
            try:
                spool.write(head)
                size = len(head)
                del head
                for chunk in chunks:
                    digest.update(chunk)
                    spool.write(chunk)
                    size += len(chunk)
                spool.flush()
            except OSError as exc:
                raise UnavailableError(f"cannot spool an upload of {quoted(key)}: {exc.strerror}") from exc
            check_digest(key, expected_sha256, digest.hexdigest())
            return self._put_path(key, name, spool.name, digest.hexdigest(), size)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> BlobInfo:
        name = self._name(key)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as source:
                while chunk := source.read(CHUNK_SIZE):
                    digest.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            raise NotFoundError(f"file to store not found: {os.fspath(path)}") from None
        except OSError as exc:
            raise UnavailableError(f"cannot read {os.fspath(path)}: {exc.strerror}") from exc
        return self._put_path(key, name, os.fspath(path), digest.hexdigest(), size)

    def _put_bytes(self, key: str, name: str, body: bytes, sha256: str) -> BlobInfo:
        with self._errors(f"storing {quoted(key)}", key=None):
            self._client.put_object(Bucket=self.bucket, Key=name, Body=body, Metadata={"sha256": sha256})
        return self._stored_info(key, name, len(body), sha256)

    def _put_path(self, key: str, name: str, path: str, sha256: str, size: int) -> BlobInfo:
        with self._errors(f"storing {quoted(key)}", key=None):
            self._client.upload_file(
                path, self.bucket, name, ExtraArgs={"Metadata": {"sha256": sha256}}, Config=self._transfer
            )
        return self._stored_info(key, name, size, sha256)

    def _stored_info(self, key: str, name: str, size: int, sha256: str) -> BlobInfo:
        """Return the info of what was just stored, with the server's modification time."""
        modified = datetime.now(UTC)
        try:
            head = self._head(key, name)
        except NotFoundError:
            head = None  # deleted already by someone else
        if head is not None and head.size == size and head.sha256 == sha256:
            modified = head.modified  # else overwritten meanwhile: keep our clock
        return BlobInfo(key, size, sha256, modified)

    # -- reading

    def _head(self, key: str, name: str) -> BlobInfo:
        with self._errors(f"reading {quoted(key)}", key=key):
            response = self._client.head_object(Bucket=self.bucket, Key=name)
        sha256 = (response.get("Metadata") or {}).get("sha256")
        if not (isinstance(sha256, str) and SHA256_RE.fullmatch(sha256)):
            sha256 = None
        return BlobInfo(key, int(response["ContentLength"]), sha256, response["LastModified"])

    def stat(self, key: str) -> BlobInfo:
        return self._head(key, self._name(key))

    def exists(self, key: str) -> bool:
        try:
            self._head(key, self._name(key))
        except NotFoundError:
            return False
        return True

    def open(self, key: str) -> BinaryIO:
        name = self._name(key)
        with self._errors(f"reading {quoted(key)}", key=key):
            response = self._client.get_object(Bucket=self.bucket, Key=name)
        raw = _S3Reader(response["Body"], lambda exc: self._translate(exc, f"reading {quoted(key)}", key))
        return io.BufferedReader(raw, buffer_size=CHUNK_SIZE)  # type: ignore[return-value]

    def open_range(self, key: str, start: int, *, length: int | None = None) -> BinaryIO:
        check_range(start, 0)
        if start == 0:
            return self.open(key)
        name = self._name(key)
        from botocore.exceptions import ClientError

        with self._errors(f"reading {quoted(key)}", key=key):
            try:
                end = start + length - 1 if length else ""  # only what the caller reads: S3 sends no more
                response = self._client.get_object(Bucket=self.bucket, Key=name, Range=f"bytes={start}-{end}")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return io.BytesIO(b"")  # type: ignore[return-value] - the range starts at or past the end
                raise
        if not response.get("ContentRange"):
            response["Body"].close()
            raise UnavailableError(f"the S3 endpoint for {self._where()} ignored a byte range request",
                                   hint="use an S3 service that supports ranged GET")
        raw = _S3Reader(response["Body"], lambda exc: self._translate(exc, f"reading {quoted(key)}", key))
        return io.BufferedReader(raw, buffer_size=CHUNK_SIZE)  # type: ignore[return-value]

    def read_range(self, key: str, start: int, length: int) -> bytes:
        name = self._name(key)
        check_range(start, length)
        if length == 0:
            self._head(key, name)  # still report a missing blob
            return b""
        from botocore.exceptions import ClientError

        with self._errors(f"reading {quoted(key)}", key=key):
            try:
                response = self._client.get_object(
                    Bucket=self.bucket, Key=name, Range=f"bytes={start}-{start + length - 1}"
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # the range starts at or past the end
                raise
            with response["Body"] as body:
                if start > 0 and not response.get("ContentRange"):
                    raise UnavailableError(
                        f"the S3 endpoint for {self._where()} ignored a byte range request",
                        hint="use an S3 service that supports ranged GET",
                    )
                return body.read(length)

    # -- deleting and listing

    def delete(self, key: str) -> None:
        name = self._name(key)
        with self._errors(f"deleting {quoted(key)}", key=None):
            self._client.delete_object(Bucket=self.bucket, Key=name)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        return self._iter_keys(prefix)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors("listing blobs"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self.prefix) :]
                    if is_key(key):
                        yield key  # objects with foreign names are skipped

    def check(self) -> None:
        with self._errors("checking the bucket"):
            self._client.head_bucket(Bucket=self.bucket)
