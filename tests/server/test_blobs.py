"""Blob storage: one contract suite run against both stores, then what is specific to each.

The S3 store runs against a real moto_server subprocess on 127.0.0.1 (see
tests/support/s3.py); the local store against a directory in tmp_path.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import pwd
import random
import shutil
import stat
import string
import tempfile
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from protocol.errors import ConfigError, ConflictError, DamagedError, InvalidInputError, NotFoundError, UnavailableError
from server.blobs import (
    CHUNK_SIZE,
    MAX_KEY_LENGTH,
    MAX_RANGE_LENGTH,
    MAX_SEGMENT_LENGTH,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    blob_store,
    key_under,
    validate_key,
    validate_prefix,
)
from server.settings import BlobSettings, ServerSettings
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoServer, free_port

KiB = 1024
MiB = 1024 * KiB


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class GeneratedStream(io.RawIOBase):
    """A non-seekable stream of ``size`` pseudo-random bytes, made block by block as read.

    Nothing holds the whole content, so a store that buffers it all shows up in
    tracemalloc's peak. With ``fail_after`` it raises RuntimeError once that many
    bytes were read, like a client that disconnects mid-upload.
    """

    BLOCK = 64 * KiB

    def __init__(self, size: int, seed: int = 0, fail_after: int | None = None):
        self._left = size
        self._random = random.Random(seed)
        self._pending = b""
        self._fail_after = fail_after
        self._given = 0

    @staticmethod
    def digest(size: int, seed: int = 0) -> str:
        stream = GeneratedStream(size, seed)
        digest = hashlib.sha256()
        while block := stream.read(GeneratedStream.BLOCK):
            digest.update(block)
        return digest.hexdigest()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if self._fail_after is not None and self._given >= self._fail_after:
            raise RuntimeError("the client went away")
        if not self._pending and self._left:
            take = min(self.BLOCK, self._left)
            self._pending = self._random.randbytes(take)
            self._left -= take
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        self._given += count
        return count


def stream_digest(handle) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """Read ``handle`` to its end in chunks; return (size, sha256)."""
    digest = hashlib.sha256()
    size = 0
    with handle:
        while chunk := handle.read(256 * KiB):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def make_s3_store(server: MotoServer, bucket: str, **options) -> S3BlobStore:  # type: ignore[no-untyped-def]
    return S3BlobStore(
        bucket,
        endpoint_url=server.url,
        region=REGION,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        **options,
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """An empty store of each kind; S3 uses the smallest part size so 20 MB is 4 parts."""
    if request.param == "local":
        return LocalBlobStore(tmp_path / "area" / "blobs")
    server: MotoServer = request.getfixturevalue("moto_server")
    return make_s3_store(server, server.create_bucket(), part_size=5 * MiB)


# --------------------------------------------------------------------------- keys

SEGMENT = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=40).filter(
    lambda s: s not in (".", "..")
)
VALID_KEYS = st.lists(SEGMENT, min_size=1, max_size=6).map("/".join)
NOT_KEY_CHARACTERS = st.one_of(
    st.sampled_from(["\\", "\x00", " ", "\n", "\t", ":", "%", "~", "@", "*", "?", "é", "\u202e"]),
    st.characters(exclude_characters=string.ascii_letters + string.digits + "._-/"),
)


def _insert(key: str, text: str, where: int) -> str:
    at = where % (len(key) + 1)
    return key[:at] + text + key[at:]


def hostile_keys() -> st.SearchStrategy[str]:
    """Keys that are invalid by construction: traversal, absolute, empty segments, bad characters."""
    return st.one_of(
        st.builds(
            lambda before, dots, after: "/".join([*before, dots, *after]),
            st.lists(SEGMENT, max_size=3),
            st.sampled_from([".", ".."]),
            st.lists(SEGMENT, max_size=3),
        ),
        VALID_KEYS.map(lambda k: "/" + k),
        st.builds(lambda a, b: f"{a}//{b}", VALID_KEYS, VALID_KEYS),
        VALID_KEYS.map(lambda k: k + "/"),
        st.builds(_insert, VALID_KEYS, NOT_KEY_CHARACTERS, st.integers(0, 100)),
        st.sampled_from(
            [
                "",
                "/",
                "..",
                "../x",
                "/abs",
                "a//b",
                "a/./b",
                "a/../../b",
                "..\\x",
                "a\\..\\b",
                "C:\\x",
                "\\\\server\\share",
                "a\x00b",
                "x\n",
                "./a",
                "a/.",
                "~/x",
                "%2e%2e/x",
            ]
        ),
        st.integers(MAX_KEY_LENGTH + 1, 3 * MAX_KEY_LENGTH).map(lambda n: ("ab/" * n)[:n].rstrip("/") + "c"),
        st.builds(lambda k, n: f"{k}/{'s' * n}", VALID_KEYS, st.integers(MAX_SEGMENT_LENGTH + 1, 300)),
    )


@given(VALID_KEYS.filter(lambda k: len(k) <= MAX_KEY_LENGTH))
def test_valid_keys_are_accepted_unchanged(key: str) -> None:
    assert validate_key(key) == key


@given(hostile_keys())
def test_hostile_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_key(key)


def test_key_length_limits_are_inclusive() -> None:
    longest = "/".join(["a" * MAX_SEGMENT_LENGTH, "b" * MAX_SEGMENT_LENGTH, "c" * 110])
    assert len(longest) == MAX_KEY_LENGTH and validate_key(longest) == longest
    with pytest.raises(InvalidInputError, match="characters long"):
        validate_key(longest + "c")
    with pytest.raises(InvalidInputError, match="invalid blob key"):
        validate_key("a" * (MAX_SEGMENT_LENGTH + 1))


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b", "a/b/", "a/..x", ".", ".."])
def test_prefixes_accepted(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/a", "../", "a/../", "./", "a//", "a\\b", "a\x00", 5])
def test_prefixes_refused(prefix: object) -> None:
    with pytest.raises(InvalidInputError):
        validate_prefix(prefix)


# --------------------------------------------------------------------------- contract


def test_round_trip(store: BlobStore) -> None:
    data = b"manifest.json\n" * 1000
    before = datetime.now(UTC) - timedelta(minutes=5)
    info = store.put("tickets/T-1042/bundle.tar.gz", data)
    assert (info.key, info.size, info.sha256) == ("tickets/T-1042/bundle.tar.gz", len(data), sha256(data))
    with store.open("tickets/T-1042/bundle.tar.gz") as handle:
        assert handle.read() == data
    stat_info = store.stat("tickets/T-1042/bundle.tar.gz")
    assert (stat_info.size, stat_info.sha256) == (len(data), sha256(data))
    assert before < stat_info.modified < datetime.now(UTC) + timedelta(minutes=5)
    assert abs(stat_info.modified - info.modified) < timedelta(seconds=2)
    assert store.exists("tickets/T-1042/bundle.tar.gz")
    assert not store.exists("tickets/T-1042")


def test_empty_blob(store: BlobStore) -> None:
    info = store.put("empty", b"")
    assert (info.size, info.sha256) == (0, sha256(b""))
    assert store.open("empty").read() == b""
    assert store.read_range("empty", 0, 10) == b""
    assert store.stat("empty").sha256 == sha256(b"")


@pytest.mark.parametrize(
    "key", ["...", ".hidden", "a/-", "A_b/c-d.E", "a/" * 200 + "z", "/".join(["z" * 200, "y" * 200, "x" * 110])]
)
def test_unusual_valid_keys_round_trip(store: BlobStore, key: str) -> None:
    store.put(key, key.encode())
    assert store.open(key).read() == key.encode()
    assert list(store.iter_keys()) == [key]


def test_streaming_put_of_20_mb_keeps_memory_bounded(store: BlobStore) -> None:
    size = 20 * MiB
    tracemalloc.start()
    try:
        info = store.put("recordings/session-7.cast", GeneratedStream(size, seed=7))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = GeneratedStream.digest(size, seed=7)
    assert (info.size, info.sha256) == (size, expected)
    # A store that buffered the upload would peak above 20 MiB; what is allowed is
    # a few MiB per concurrent part upload (S3) or per chunk (local).
    assert peak < size // 2, f"put of {size} bytes peaked at {peak} bytes of Python memory"
    assert stream_digest(store.open("recordings/session-7.cast")) == (size, expected)
    assert store.stat("recordings/session-7.cast").sha256 == expected


def test_put_file(store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "bundle.tar"
    source.write_bytes(random.Random(3).randbytes(3 * MiB + 17))
    info = store.put_file("bundles/b1.tar", source)
    assert (info.size, info.sha256) == (3 * MiB + 17, sha256(source.read_bytes()))
    assert store.open("bundles/b1.tar").read() == source.read_bytes()
    with pytest.raises(NotFoundError, match="not found"):
        store.put_file("bundles/b2.tar", tmp_path / "missing.tar")
    assert not store.exists("bundles/b2.tar")


@pytest.mark.parametrize("hint", [0, 1, 10 * MiB])
def test_size_hint_is_not_trusted(store: BlobStore, hint: int) -> None:
    data = b"x" * (2 * MiB + 3)
    assert store.put("hinted", io.BytesIO(data), size_hint=hint).size == len(data)
    assert store.stat("hinted").size == len(data)
    assert store.open("hinted").read() == data


def test_read_range(store: BlobStore) -> None:
    data = bytes(range(256)) * 4096 + b"tail"
    store.put("data.bin", data)
    end = len(data)
    for start, length in [(0, 10), (1000, 5000), (255, 1), (end - 4, 4), (end - 2, 10), (0, end)]:
        assert store.read_range("data.bin", start, length) == data[start : start + length], (start, length)
    assert store.read_range("data.bin", end, 10) == b""
    assert store.read_range("data.bin", end + 100, 1) == b""
    assert store.read_range("data.bin", 5, 0) == b""
    for start, length in [(-1, 5), (0, -1)]:
        with pytest.raises(InvalidInputError):
            store.read_range("data.bin", start, length)
    with pytest.raises(InvalidInputError, match="larger than") as raised:
        store.read_range("data.bin", 0, MAX_RANGE_LENGTH + 1)
    assert "open()" in (raised.value.hint or "")


@pytest.mark.parametrize("size", [10, 3 * 1024 * 1024], ids=["small", "spooled"])
def test_a_put_with_an_expected_digest_commits_only_matching_bytes(store: BlobStore, size: int) -> None:
    old, new = b"o" * size, b"n" * size
    store.put("checked", old)
    with pytest.raises(DamagedError, match="do not hash to the expected SHA-256"):
        store.put("checked", io.BytesIO(new), expected_sha256=hashlib.sha256(b"other").hexdigest())
    assert store.open("checked").read() == old  # what was stored before stays
    with pytest.raises(DamagedError):
        store.put("fresh/one", new, expected_sha256="0" * 64)
    assert not store.exists("fresh/one") and list(store.iter_keys("fresh/")) == []
    info = store.put("checked", io.BytesIO(new), expected_sha256=hashlib.sha256(new).hexdigest())
    assert info.sha256 == hashlib.sha256(new).hexdigest() and store.open("checked").read() == new


def test_open_range_streams_from_an_offset_to_the_end(store: BlobStore) -> None:
    data = bytes(range(256)) * 8192 + b"tail"  # over CHUNK_SIZE, so a skip spans reads
    store.put("data.bin", data)
    end = len(data)
    for start in (0, 1, 255, CHUNK_SIZE + 7, end - 4, end, end + 100):
        with store.open_range("data.bin", start) as stream:
            assert stream.read() == data[start:], start
    with pytest.raises(InvalidInputError):
        store.open_range("data.bin", -1)
    with pytest.raises(NotFoundError):
        store.open_range("absent/x", 0)



def test_open_range_with_a_length_gives_at_least_that_span(store: BlobStore) -> None:
    data = bytes(range(256)) * 8192 + b"tail"
    store.put("data.bin", data)
    end = len(data)
    for start, length in ((0, 10), (1, CHUNK_SIZE + 3), (CHUNK_SIZE + 7, 100), (end - 4, 4), (5, end - 5)):
        with store.open_range("data.bin", start, length=length) as stream:
            got = stream.read(length)
        assert got == data[start : start + length], (start, length)
    with pytest.raises(NotFoundError):
        store.open_range("absent/x", 3, length=10)

def test_missing_key(store: BlobStore) -> None:
    store.put("present", b"1")
    for read in (store.open, store.stat, lambda k: store.read_range(k, 0, 1), lambda k: store.read_range(k, 0, 0)):
        with pytest.raises(NotFoundError, match="no blob 'absent/x'"):
            read("absent/x")
    assert not store.exists("absent/x")
    store.delete("absent/x")


def test_delete_is_idempotent(store: BlobStore) -> None:
    store.put("a/b", b"1")
    store.put("a/c", b"2")
    store.delete("a/b")
    store.delete("a/b")
    assert not store.exists("a/b")
    assert list(store.iter_keys()) == ["a/c"]
    store.delete("a")  # a folder of other blobs, not a blob: nothing happens
    assert store.open("a/c").read() == b"2"


def test_overwrite_is_atomic_for_concurrent_readers(store: BlobStore) -> None:
    old, new = b"\x01" * (1536 * KiB), b"\x02" * (2560 * KiB)
    store.put("doc", old)
    seen: set[str] = set()
    errors: list[BaseException] = []
    done = threading.Event()

    def read_repeatedly() -> None:
        for _ in range(10_000):
            try:
                with store.open("doc") as handle:
                    seen.add(sha256(handle.read()))
                seen.add(store.stat("doc").sha256 or "")
            except BaseException as exc:  # reported by the test thread
                errors.append(exc)
                return
            if done.is_set():
                return

    reader = threading.Thread(target=read_repeatedly)
    reader.start()
    try:
        for round_ in range(8):
            store.put("doc", io.BytesIO(new if round_ % 2 == 0 else old))
    finally:
        done.set()
        reader.join(timeout=60)
    assert not reader.is_alive()
    assert not errors, errors
    assert seen and seen <= {sha256(old), sha256(new)}
    assert store.open("doc").read() == old


def test_reader_opened_before_overwrite_keeps_the_old_blob(store: BlobStore) -> None:
    old, new = b"o" * (3 * MiB), b"n" * (3 * MiB)
    store.put("doc", old)
    with store.open("doc") as handle:
        first = handle.read(10)
        store.put("doc", new)
        assert first + handle.read() == old
    assert store.open("doc").read() == new


def test_failed_put_keeps_the_previous_blob(store: BlobStore) -> None:
    store.put("doc", b"previous")
    with pytest.raises(RuntimeError, match="went away"):
        store.put("doc", GeneratedStream(4 * MiB, fail_after=1536 * KiB))
    with pytest.raises(RuntimeError, match="went away"):
        store.put("new/doc", GeneratedStream(4 * MiB, fail_after=1536 * KiB))
    assert store.open("doc").read() == b"previous"
    assert store.stat("doc").sha256 == sha256(b"previous")
    assert list(store.iter_keys()) == ["doc"]
    if isinstance(store, LocalBlobStore):
        assert sorted(p.name for p in store.root.rglob("*")) == [".folders@lock", "doc", "doc@sha256"]


def test_hostile_keys_are_refused_by_every_operation(store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    operations = {
        "put": lambda key: store.put(key, b"payload"),
        "put stream": lambda key: store.put(key, io.BytesIO(b"payload")),
        "put_file": lambda key: store.put_file(key, source),
        "open": store.open,
        "read_range": lambda key: store.read_range(key, 0, 1),
        "stat": store.stat,
        "exists": store.exists,
        "delete": store.delete,
    }

    @settings(max_examples=150, deadline=None)
    @given(key=hostile_keys())
    def attempt(key: str) -> None:
        for name, operation in operations.items():
            with pytest.raises(InvalidInputError):
                operation(key)
                pytest.fail(f"{name} accepted {key!r}")

    attempt()
    assert list(store.iter_keys()) == []
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_iter_keys_with_prefix(store: BlobStore) -> None:
    keys = ["a/b.txt", "a/c/d", "a/c/e", "a.txt", "ab", "b/x", "a-", "a/c.x"]
    for key in keys:
        store.put(key, key.encode())
    assert list(store.iter_keys()) == sorted(keys)
    assert list(store.iter_keys("")) == sorted(keys)
    assert list(store.iter_keys("a/")) == ["a/b.txt", "a/c.x", "a/c/d", "a/c/e"]
    assert list(store.iter_keys("a")) == ["a-", "a.txt", "a/b.txt", "a/c.x", "a/c/d", "a/c/e", "ab"]
    assert list(store.iter_keys("a/c")) == ["a/c.x", "a/c/d", "a/c/e"]
    assert list(store.iter_keys("a/c/")) == ["a/c/d", "a/c/e"]
    assert list(store.iter_keys("b/x")) == ["b/x"]
    assert list(store.iter_keys("zzz")) == []
    assert list(store.iter_keys("nothing/here/")) == []


@pytest.mark.parametrize("prefix", ["../", "/a", "a//", "a/../"])
def test_iter_keys_refuses_bad_prefix_at_call_time(store: BlobStore, prefix: str) -> None:
    with pytest.raises(InvalidInputError):
        store.iter_keys(prefix)


def test_check_passes_on_a_healthy_store(store: BlobStore) -> None:
    store.check()
    assert list(store.iter_keys()) == []  # the probe leaves nothing behind


# --------------------------------------------------------------------------- local


def test_local_root_folders_and_files_are_private(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("t/1/bundle", b"secret")
    assert stat.S_IMODE((tmp_path / "blobs").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "blobs" / "t" / "1").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "blobs" / "t" / "1" / "bundle").stat().st_mode) == 0o600


def test_local_root_that_cannot_be_a_directory_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create"):
        LocalBlobStore(tmp_path / "file" / "blobs")
    with pytest.raises(ConfigError, match="not a directory"):
        LocalBlobStore(tmp_path / "file")


def _run_as_nobody(action) -> int:  # type: ignore[no-untyped-def]
    """Run ``action`` in a forked child with nobody's uid; return its exit code (bounded wait)."""
    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 70
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            code = action()
        finally:
            os._exit(code)
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the check as nobody did not finish in 10 s")


def test_local_check_fails_when_the_directory_is_not_writable(tmp_path: Path) -> None:
    def check_refused() -> int:
        try:
            store.check()
        except UnavailableError as exc:
            return 0 if "is not writable" in exc.message and exc.hint else 1
        return 2

    if os.geteuid() != 0:
        store = LocalBlobStore(tmp_path / "blobs")
        store.root.chmod(0o500)
        try:
            assert check_refused() == 0
        finally:
            store.root.chmod(0o700)
        return
    # Root ignores permission bits: check as nobody a directory nobody may read but not write.
    base = Path(tempfile.mkdtemp(prefix="helpline-blobs-"))
    try:
        base.chmod(0o755)
        store = LocalBlobStore(base / "blobs")
        store.root.chmod(0o755)
        store.check()  # root may write
        assert _run_as_nobody(check_refused) == 0
    finally:
        shutil.rmtree(base)


def test_local_check_fails_when_the_directory_is_gone(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    shutil.rmtree(store.root)
    with pytest.raises(UnavailableError, match="cannot open the blob directory"):
        store.check()


def test_local_put_fails_early_when_the_disk_cannot_hold_the_size_hint(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("doc", b"kept")
    vfs = os.statvfs(store.root)
    too_big = vfs.f_bavail * vfs.f_frsize * 2 + 1024 * MiB
    stream = GeneratedStream(10 * MiB)
    with pytest.raises(UnavailableError, match="is full") as raised:
        store.put("doc", stream, size_hint=too_big)
    assert raised.value.hint
    assert stream._given == 0  # refused before reading the upload
    assert store.open("doc").read() == b"kept"
    assert sorted(p.name for p in store.root.iterdir()) == ["doc", "doc@sha256"]


def test_local_never_follows_symlinks_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"do not serve me")
    store = LocalBlobStore(tmp_path / "blobs")
    (store.root / "link").symlink_to(outside, target_is_directory=True)
    (store.root / "alias").symlink_to(outside / "secret")

    for key in ("link/secret", "alias"):
        with pytest.raises(NotFoundError):
            store.open(key)
        with pytest.raises(NotFoundError):
            store.stat(key)
        with pytest.raises(NotFoundError):
            store.read_range(key, 0, 5)
        assert not store.exists(key)
    with pytest.raises(ConflictError, match="symbolic link"):
        store.put("link/new", b"escape")
    store.delete("link/secret")
    assert list(store.iter_keys()) == []
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"do not serve me"

    # Storing over a symlink replaces the link itself, never its target.
    store.put("alias", b"mine")
    assert not (store.root / "alias").is_symlink()
    assert (outside / "secret").read_bytes() == b"do not serve me"


def test_local_fifo_in_the_tree_is_not_a_blob(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    os.mkfifo(store.root / "pipe")
    with pytest.raises(NotFoundError):
        store.open("pipe")  # would block forever if opened for reading as a file
    assert list(store.iter_keys()) == []


def test_local_blob_and_folder_cannot_share_a_name(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("a", b"blob")
    with pytest.raises(ConflictError):
        store.put("a/b", b"under a blob")
    store.put("c/d", b"inside")
    with pytest.raises(ConflictError, match="folder"):
        store.put("c", b"over a folder")
    assert store.open("a").read() == b"blob"
    assert store.open("c/d").read() == b"inside"
    assert sorted(p.name for p in store.root.iterdir()) == [".folders@lock", "a", "a@sha256", "c"]


def test_local_sha256_is_recomputed_when_the_sidecar_is_missing_or_stale(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("one", b"first")
    store.put("two", b"second")
    (store.root / "one@sha256").unlink()
    assert store.stat("one").sha256 == sha256(b"first")
    shutil.copy(store.root / "two@sha256", store.root / "one@sha256")  # describes another file
    assert store.stat("one").sha256 == sha256(b"first")
    (store.root / "two").write_bytes(b"edited in place")  # same inode, new size and mtime
    assert store.stat("two").sha256 == sha256(b"edited in place")
    (store.root / "copied-in").write_bytes(b"by hand")
    assert store.stat("copied-in").sha256 == sha256(b"by hand")
    assert list(store.iter_keys()) == ["copied-in", "one", "two"]


def test_local_leftovers_are_not_listed_and_delete_prunes_folders(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("t/1/a", b"1")
    store.put("t/2/b", b"2")
    (store.root / "t" / "1" / ".a@tmp-0123456789abcdef").write_bytes(b"crash leftover")
    (store.root / "t" / "bad name").write_bytes(b"foreign")
    assert list(store.iter_keys()) == ["t/1/a", "t/2/b"]
    store.delete("t/2/b")
    assert not (store.root / "t" / "2").exists()
    assert (store.root / "t" / "1").exists()  # still holds a blob


def test_local_concurrent_put_and_delete_in_one_folder(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    errors: list[BaseException] = []

    def churn(name: str) -> None:
        try:
            for round_ in range(150):
                store.put(f"shared/deep/{name}", f"{name}{round_}".encode())
                store.delete(f"shared/deep/{name}")
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    workers = [threading.Thread(target=churn, args=(f"w{i}",)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers)
    assert not errors, errors
    assert list(store.iter_keys()) == []


def test_local_folder_lock_keeps_puts_and_folder_removal_apart(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("seed/blob", b"its folder made the lock file")
    lock_path = store.root / ".folders@lock"

    def in_thread(action) -> threading.Thread:  # type: ignore[no-untyped-def]
        worker = threading.Thread(target=action)
        worker.start()
        return worker

    with open(lock_path, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a folder removal in another process would
        put = in_thread(lambda: store.put("t/9/bundle", b"x"))
        put.join(timeout=0.5)
        assert put.is_alive() and not (store.root / "t").exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
        put.join(timeout=10)
    assert not put.is_alive() and store.exists("t/9/bundle")

    with open(lock_path, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # as a put making its folder would
        delete = in_thread(lambda: store.delete("t/9/bundle"))
        delete.join(timeout=0.5)
        assert delete.is_alive() and (store.root / "t" / "9").exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
        delete.join(timeout=10)
    assert not delete.is_alive() and not (store.root / "t").exists()


# --------------------------------------------------------------------------- S3


def test_s3_keeps_sha256_in_metadata_and_uploads_large_blobs_in_parts(moto_server: MotoServer, s3_bucket: str) -> None:
    store = make_s3_store(moto_server, s3_bucket, part_size=5 * MiB)
    info = store.put("bundles/big.tar", GeneratedStream(12 * MiB, seed=1))
    head = moto_server.client().head_object(Bucket=s3_bucket, Key="bundles/big.tar")
    assert head["Metadata"]["sha256"] == info.sha256 == GeneratedStream.digest(12 * MiB, seed=1)
    assert head["ETag"].strip('"').endswith("-3")  # three parts of 5, 5 and 2 MiB
    store.put("small", b"tiny")
    head = moto_server.client().head_object(Bucket=s3_bucket, Key="small")
    assert head["Metadata"]["sha256"] == sha256(b"tiny")
    assert "-" not in head["ETag"]


def test_s3_objects_from_other_tools(moto_server: MotoServer, s3_bucket: str) -> None:
    client = moto_server.client()
    client.put_object(Bucket=s3_bucket, Key="uploaded/by-hand", Body=b"abc")
    client.put_object(Bucket=s3_bucket, Key="weird//name", Body=b"x")
    client.put_object(Bucket=s3_bucket, Key="../escape", Body=b"x")
    store = make_s3_store(moto_server, s3_bucket)
    info = store.stat("uploaded/by-hand")
    assert (info.size, info.sha256) == (3, None)
    assert store.open("uploaded/by-hand").read() == b"abc"
    assert list(store.iter_keys()) == ["uploaded/by-hand"]


def test_s3_prefix_separates_stores_in_one_bucket(moto_server: MotoServer, s3_bucket: str) -> None:
    first = make_s3_store(moto_server, s3_bucket, prefix="one")
    second = make_s3_store(moto_server, s3_bucket, prefix="two/")
    first.put("doc", b"1")
    second.put("doc", b"2")
    second.put("only-two", b"2")
    assert first.open("doc").read() == b"1"
    assert list(first.iter_keys()) == ["doc"]
    assert list(second.iter_keys()) == ["doc", "only-two"]
    names = [o["Key"] for o in moto_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert names == ["one/doc", "two/doc", "two/only-two"]
    first.delete("doc")
    assert second.exists("doc")


def test_s3_check_fails_for_a_missing_bucket(moto_server: MotoServer) -> None:
    store = make_s3_store(moto_server, "helpline-no-such-bucket")
    with pytest.raises(UnavailableError, match=r"'helpline-no-such-bucket'.*does not exist") as raised:
        store.check()
    assert raised.value.hint
    with pytest.raises(UnavailableError, match="does not exist"):
        store.put("doc", b"x")


def test_s3_check_fails_when_the_endpoint_is_unreachable() -> None:
    store = S3BlobStore(
        "helpline-test",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region=REGION,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        connect_timeout=1,
    )
    with pytest.raises(UnavailableError, match="cannot reach the S3 endpoint"):
        store.check()
    with pytest.raises(UnavailableError, match="cannot reach the S3 endpoint"):
        store.stat("doc")


def test_s3_secret_key_is_never_shown_or_logged(
    moto_server: MotoServer, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = make_s3_store(moto_server, s3_bucket)
    store.put("doc", b"x")
    store.stat("doc")
    messages = [repr(store), str(store.__dict__)]
    for broken in (make_s3_store(moto_server, "helpline-no-such-bucket"),):
        with pytest.raises(UnavailableError) as raised:
            broken.check()
        messages += [raised.value.message, raised.value.hint or "", repr(raised.value.__cause__)]
    assert any(record.name.startswith("botocore") for record in caplog.records)  # logging was on
    assert SECRET_KEY not in caplog.text
    for message in messages:
        assert SECRET_KEY not in message


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"access_key": "only-half"}, "together"),
        ({"part_size": 1024}, "part size"),
        ({"endpoint_url": "localhost:9000"}, "endpoint"),
        ({"prefix": "../x"}, "prefix"),
    ],
)
def test_s3_bad_configuration(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        S3BlobStore("helpline-test", **options)
    with pytest.raises(ConfigError, match="bucket"):
        S3BlobStore("bad/bucket")


# --------------------------------------------------------------------------- settings


def test_factory_builds_each_kind(tmp_path: Path) -> None:
    local = blob_store(BlobSettings(backend="local", dir=tmp_path / "blobs", s3_bucket="ignored"))
    assert isinstance(local, LocalBlobStore) and local.root == (tmp_path / "blobs").resolve()
    s3 = blob_store(BlobSettings(
        backend="s3", s3_bucket="helpline", s3_endpoint_url="http://127.0.0.1:9", s3_access_key="a", s3_secret_key="b",
        s3_prefix="p",
    ))
    assert isinstance(s3, S3BlobStore) and (s3.bucket, s3.prefix) == ("helpline", "p/")


def test_server_settings_put_local_blobs_in_the_data_dir(tmp_path: Path) -> None:
    store = blob_store(ServerSettings(data_dir=tmp_path).blobs)
    assert isinstance(store, LocalBlobStore) and store.root == (tmp_path / "blobs").resolve()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"backend": "local"}, "needs a directory"),
        ({"backend": "s3"}, "needs a bucket"),
        ({"backend": "s3", "s3_bucket": "b-1", "s3_secret_key": "s"}, "together"),
    ],
)
def test_factory_refuses_bad_settings(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as raised:
        blob_store(BlobSettings(**options))
    assert raised.value.status == 3


@pytest.mark.parametrize("backend", ["ftp", "", " S3 "])
def test_unknown_backends_are_refused_by_the_settings(backend: str) -> None:
    with pytest.raises(ValidationError):
        BlobSettings(backend=backend)


# --------------------------------------------------------------------------- folders


@pytest.mark.parametrize("folder", ["bundles", "uploads", "recordings", "snapshots"])
def test_each_kind_of_blob_has_a_folder_whose_keys_every_store_takes(folder: str, store: BlobStore) -> None:
    key = key_under(folder, "T-1001", "0f3e.bin")
    assert key == f"{folder}/T-1001/0f3e.bin"
    store.put(key, b"x")
    assert list(store.iter_keys(folder + "/")) == [key]


def test_keys_outside_the_known_folders_or_with_bad_segments_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown blob folder"):
        key_under("misc", "a")
    with pytest.raises(InvalidInputError, match="invalid blob key"):
        key_under("recordings", "..", "a")
