"""Bundle archives: deterministic packing, and refusal of hostile archives built here with
tarfile — without extracting, quickly, and without writing anything."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import time
import zlib
from pathlib import Path

import pytest

from protocol.archive import TOP_DIR, inspect_archive, pack, safe_extract
from protocol.errors import InvalidInputError, NotFoundError

CREATED_AT = "2024-03-01T10:00:00+00:00"


def make_bundle_dir(root: Path) -> Path:
    """A small bundle directory: the three documents and a few raw files."""
    out = root / "bundle"
    (out / "raw/logs/files").mkdir(parents=True)
    (out / "raw/system").mkdir()
    (out / "manifest.json").write_text(json.dumps({"schema_version": 1, "created_at": CREATED_AT}))
    (out / "summary.json").write_text(json.dumps({"os": {"name": "Linux"}}))
    (out / "report.html").write_text("<!DOCTYPE html><p>report</p>\n")
    (out / "raw/system/os-release.txt").write_text("NAME=Debian\n")
    (out / "raw/logs/files/app.log").write_text("error line\n" * 5000)
    (out / "raw/logs/files" / ("Grüße-" + "x" * 120 + ".log")).write_text("long, non-ASCII name\n")
    return out


def documents(tar: tarfile.TarFile) -> None:
    """Add the three required documents, so only the planted problem makes an archive bad."""
    for name, data in (("manifest.json", b"{}"), ("summary.json", b"{}"), ("report.html", b"<p></p>")):
        add_file(tar, f"{TOP_DIR}/{name}", data)


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def hostile(path: Path, build, *, fmt: int = tarfile.GNU_FORMAT) -> Path:
    """Write a .tar.gz whose members ``build(tar)`` adds after the required documents."""
    with gzip.open(path, "wb") as gz, tarfile.open(fileobj=gz, mode="w|", format=fmt) as tar:
        documents(tar)
        build(tar)
    return path


def refused(path: Path, match: str, **limits) -> None:
    """Assert that inspecting and extracting ``path`` are refused with ``match`` and nothing is written."""
    before = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(InvalidInputError, match=match):
        inspect_archive(path, **limits)
    dest = path.parent / "extracted"
    with pytest.raises(InvalidInputError, match=match):
        safe_extract(path, dest, **limits)
    assert not dest.exists() or not any(dest.iterdir())
    assert sorted(p.name for p in path.parent.iterdir() if p.name != "extracted") == before


# -- packing ----------------------------------------------------------------------------


def test_pack_inspect_round_trip(tmp_path):
    out = make_bundle_dir(tmp_path)
    size, digest = pack(out, tmp_path / "b.tar.gz")
    assert size == (tmp_path / "b.tar.gz").stat().st_size
    listing = inspect_archive(tmp_path / "b.tar.gz")
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert sorted(listing.names()) == sorted(files)
    assert listing.total_bytes == sum(len(data) for data in files.values())
    assert listing.read_member("manifest.json", 1024) == files["manifest.json"]
    both = listing.read_members(["summary.json", "raw/system/os-release.txt"], 1024)
    assert both["raw/system/os-release.txt"] == b"NAME=Debian\n"
    with pytest.raises(InvalidInputError, match="more than the 100 allowed"):
        listing.read_member("raw/logs/files/app.log", 100)
    with pytest.raises(NotFoundError):
        listing.read_member("raw/nope.txt", 100)


def test_pack_is_deterministic_and_normalises_metadata(tmp_path):
    out = make_bundle_dir(tmp_path)
    first = pack(out, tmp_path / "1.tar.gz")
    os.utime(out / "raw/system/os-release.txt", (1, 1))
    os.chmod(out / "raw/system/os-release.txt", 0o600)
    time.sleep(0.01)
    second = pack(out, tmp_path / "2.tar.gz")
    assert first == second
    assert (tmp_path / "1.tar.gz").read_bytes() == (tmp_path / "2.tar.gz").read_bytes()
    with tarfile.open(tmp_path / "1.tar.gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and names[0] == TOP_DIR
    assert all(name == TOP_DIR or name.startswith(TOP_DIR + "/") for name in names)
    assert {m.mtime for m in members} == {1709287200}
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in members)
    assert {(m.type, m.mode) for m in members} == {(tarfile.DIRTYPE, 0o755), (tarfile.REGTYPE, 0o644)}
    with gzip.open(tmp_path / "1.tar.gz") as gz:
        gz.read()
        assert gz.mtime == 1709287200


def test_pack_refuses_links_and_a_missing_manifest(tmp_path):
    out = make_bundle_dir(tmp_path)
    (out / "raw/link").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInputError, match="symbolic link"):
        pack(out, tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()
    (out / "raw/link").unlink()
    (out / "manifest.json").unlink()
    with pytest.raises(InvalidInputError, match="no manifest.json"):
        pack(out, tmp_path / "b.tar.gz")


def test_safe_extract_writes_exactly_the_members(tmp_path):
    out = make_bundle_dir(tmp_path)
    pack(out, tmp_path / "b.tar.gz")
    dest = tmp_path / "got"
    listing = safe_extract(tmp_path / "b.tar.gz", dest)
    written = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    expected = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert written == expected and sorted(listing.names()) == sorted(expected)
    with pytest.raises(InvalidInputError, match="not an empty directory"):
        safe_extract(tmp_path / "b.tar.gz", dest)
    link = tmp_path / "link-dest"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidInputError, match="not an empty directory"):
        safe_extract(tmp_path / "b.tar.gz", link)
    assert not (tmp_path / "elsewhere").exists()


# -- hostile archives ------------------------------------------------------------------------


@pytest.mark.parametrize("name, match", [
    ("../evil", "'..'"),
    (f"{TOP_DIR}/../evil", "'..'"),
    (f"{TOP_DIR}/raw/../../evil", "'..'"),
    ("/etc/passwd", "absolute"),
    (f"{TOP_DIR}\\..\\evil", "backslash"),
    (f"{TOP_DIR}/raw\\..\\..\\evil", "backslash"),
    ("C:/Windows/evil", "colon"),
    ("elsewhere/file.txt", "outside helpline-bundle"),
    (f"{TOP_DIR}//raw/x", "empty or '.'"),
    (f"{TOP_DIR}/./raw/x", "empty or '.'"),
    (f"{TOP_DIR}/raw/NUL.txt", "Windows"),
    (f"{TOP_DIR}/raw/x\x07", "control characters"),
])
def test_unsafe_names_are_refused(tmp_path, name, match):
    refused(hostile(tmp_path / "a.tar.gz", lambda tar: add_file(tar, name, b"x"), fmt=tarfile.PAX_FORMAT), match)


@pytest.mark.parametrize("kind, match", [
    (tarfile.SYMTYPE, "symbolic link"),
    (tarfile.LNKTYPE, "hard link"),
    (tarfile.CHRTYPE, "character device"),
    (tarfile.BLKTYPE, "block device"),
    (tarfile.FIFOTYPE, "FIFO"),
])
def test_links_devices_and_fifos_are_refused(tmp_path, kind, match):
    def build(tar):
        info = tarfile.TarInfo(f"{TOP_DIR}/raw/special")
        info.type = kind
        info.linkname = f"{TOP_DIR}/manifest.json" if kind == tarfile.LNKTYPE else "/etc/shadow"
        tar.addfile(info)

    refused(hostile(tmp_path / "a.tar.gz", build), match)


def test_duplicates_and_file_directory_clashes_are_refused(tmp_path):
    refused(hostile(tmp_path / "a.tar.gz", lambda tar: add_file(tar, f"{TOP_DIR}/manifest.json", b"{}")),
            "duplicate member")
    refused(hostile(tmp_path / "b.tar.gz", lambda tar: (add_file(tar, f"{TOP_DIR}/raw/a.txt", b"1"),
                                                        add_file(tar, f"{TOP_DIR}/RAW/A.txt", b"2"))),
            "duplicate member")
    refused(hostile(tmp_path / "c.tar.gz", lambda tar: (add_file(tar, f"{TOP_DIR}/raw", b"1"),
                                                        add_file(tar, f"{TOP_DIR}/raw/x", b"2"))),
            "as a directory")


def test_too_many_members_are_refused_early(tmp_path):
    def build(tar):
        for number in range(5000):
            add_file(tar, f"{TOP_DIR}/raw/{number}.txt", b"x")

    path = hostile(tmp_path / "a.tar.gz", build)
    started = time.monotonic()
    refused(path, "more than 1000 members", max_members=1000)
    assert time.monotonic() - started < 2


def test_size_limits_are_enforced(tmp_path):
    path = hostile(tmp_path / "a.tar.gz", lambda tar: add_file(tar, f"{TOP_DIR}/raw/big", bytes(300_000)))
    refused(path, "more than the 100000 allowed per file", max_member_bytes=100_000)
    path = hostile(tmp_path / "b.tar.gz", lambda tar: [add_file(tar, f"{TOP_DIR}/raw/{n}", bytes(60_000))
                                                       for n in range(5)])
    refused(path, "holds more than 200000 bytes", max_total_bytes=200_000)


def _zeros_gzip(path: Path, header: bytes, zeros: int, tail: bytes = b"") -> Path:
    """Gzip ``header`` + ``zeros`` zero bytes + ``tail`` in a streaming way (the compressed file stays small)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    with open(path, "wb") as out:
        out.write(compressor.compress(header))
        chunk = bytes(1 << 20)
        for _ in range(zeros // len(chunk)):
            out.write(compressor.compress(chunk))
        out.write(compressor.compress(tail))
        out.write(compressor.flush())
    return path


def _documents_tar() -> bytes:
    """The uncompressed tar members of the three documents, without the end-of-archive marker."""
    buffer = io.BytesIO()
    tar = tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT)
    documents(tar)
    end = tar.offset
    tar.close()
    return buffer.getvalue()[:end]


def _tar_prefix(member: str, size: int) -> bytes:
    """The uncompressed tar bytes of the three documents plus the header of ``member`` declaring ``size``."""
    info = tarfile.TarInfo(member)
    info.size = size
    return _documents_tar() + info.tobuf(tarfile.GNU_FORMAT)


def test_a_gzip_bomb_is_refused_by_its_ratio_while_streaming(tmp_path):
    size = 200 << 20
    path = _zeros_gzip(tmp_path / "bomb.tar.gz", _tar_prefix(f"{TOP_DIR}/raw/zeros", size), size, bytes(1024))
    assert path.stat().st_size < 1 << 20
    started = time.monotonic()
    refused(path, "expands more than 200:1", max_ratio=200)
    assert time.monotonic() - started < 2


def test_zeros_hidden_after_the_end_of_the_archive_are_counted(tmp_path):
    # Every header is honest and tiny; only counting the bytes actually decompressed catches this.
    prefix = _tar_prefix(f"{TOP_DIR}/raw/small", 10) + b"x" * 10 + bytes(502)
    path = _zeros_gzip(tmp_path / "trailer.tar.gz", prefix, 64 << 20)
    refused(path, "unpacks to more than|too much padding", max_total_bytes=1 << 20, max_ratio=10_000)


def test_truncated_corrupt_and_foreign_files_are_refused(tmp_path):
    out = make_bundle_dir(tmp_path)
    pack(out, tmp_path / "good.tar.gz")
    data = (tmp_path / "good.tar.gz").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut/a.tar.gz").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "cut/a.tar.gz", "truncated")
    (tmp_path / "cut2").mkdir()
    (tmp_path / "cut2/a.tar.gz").write_bytes(data[:-4])
    refused(tmp_path / "cut2/a.tar.gz", "truncated|corrupt")
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    (tmp_path / "flip").mkdir()
    (tmp_path / "flip/a.tar.gz").write_bytes(bytes(flipped))
    refused(tmp_path / "flip/a.tar.gz", "corrupt|truncated|checksum")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain/a.tar.gz").write_bytes(gzip.decompress(data))
    refused(tmp_path / "plain/a.tar.gz", "not a gzip")
    (tmp_path / "text").mkdir()
    (tmp_path / "text/a.tar.gz").write_bytes(gzip.compress(b"just some text, not a tar archive\n" * 50))
    refused(tmp_path / "text/a.tar.gz", "not a tar archive|truncated")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/a.tar.gz").write_bytes(b"")
    refused(tmp_path / "empty/a.tar.gz", "not a gzip")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/a.tar.gz").write_bytes(data + b"PK\x03\x04 trailing junk")
    refused(tmp_path / "junk/a.tar.gz", "corrupt")


def test_required_documents_must_be_at_the_top(tmp_path):
    path = tmp_path / "a.tar.gz"
    with gzip.open(path, "wb") as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        add_file(tar, f"{TOP_DIR}/manifest.json", b"{}")
        add_file(tar, f"{TOP_DIR}/raw/summary.json", b"{}")
    refused(path, "no helpline-bundle/summary.json")


def test_bytes_hidden_in_extended_headers_are_counted(tmp_path):
    # Each member's pax header is padded with 60 KB of zeros: tiny declared sizes, large actual stream.
    path = tmp_path / "pax.tar.gz"
    with gzip.open(path, "wb") as gz:
        gz.write(_documents_tar())
        for number in range(500):
            record = f"path={TOP_DIR}/raw/{number}.txt\n"
            record = f"{len(record) + len(str(len(record))) + 1} {record}".encode()
            pax = record + bytes(60_000 - len(record))
            header = tarfile.TarInfo("PaxHeader")
            header.type = tarfile.XHDTYPE
            header.size = len(pax)
            gz.write(header.tobuf(tarfile.GNU_FORMAT) + pax + bytes(-len(pax) % 512))
            gz.write(tarfile.TarInfo(f"{TOP_DIR}/raw/{number}.txt").tobuf(tarfile.GNU_FORMAT))
        gz.write(bytes(1024))
    refused(path, "unpacks to more than", max_total_bytes=1 << 20, max_members=1000, max_ratio=1_000_000)


def test_a_gzip_header_with_an_endless_file_name_is_refused(tmp_path):
    path = tmp_path / "a.tar.gz"
    # FLG.FNAME set, then 1 MB of name with no terminating NUL.
    path.write_bytes(b"\x1f\x8b\x08\x08" + bytes(6) + b"n" * (1 << 20))
    refused(path, "gzip header longer than")


def test_a_directory_is_not_an_archive(tmp_path):
    (tmp_path / "dir.tar.gz").mkdir()
    with pytest.raises(InvalidInputError, match="cannot read|not a regular file"):
        inspect_archive(tmp_path / "dir.tar.gz")
    with pytest.raises(NotFoundError):
        inspect_archive(tmp_path / "missing.tar.gz")


# -- links appearing on disk during extraction ----------------------------------------------


@pytest.fixture(params=["dir-descriptors", "paths"])
def writer_kind(request, monkeypatch):
    """Run a test with each writer: directory descriptors (POSIX) and plain paths (as on Windows)."""
    from protocol import archive

    if request.param == "paths":
        monkeypatch.setattr(archive, "_HAVE_DIR_FD", False)
    return request.param


def plant_link_when(monkeypatch, method: str, member: str, link: Path, target: Path) -> None:
    """Make the writer's ``method`` plant ``link`` -> ``target`` just before it handles ``member``."""
    from protocol import archive

    for cls in (archive._DirFdWriter, archive._PathWriter):
        original = getattr(cls, method)

        def planting(self, name, *args, _original=original):
            if name == member and not link.is_symlink():
                link.symlink_to(target, target_is_directory=True)
            return _original(self, name, *args)

        monkeypatch.setattr(cls, method, planting)


@pytest.mark.parametrize("method, member", [
    ("write_file", "manifest.json"),  # planted before the check of raw/ runs
    ("make_dir", "raw"),  # planted after the check, as the directory is made
])
def test_a_link_planted_in_the_destination_is_never_followed(tmp_path, monkeypatch, writer_kind, method, member):
    out = make_bundle_dir(tmp_path)
    pack(out, tmp_path / "b.tar.gz")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "got"
    plant_link_when(monkeypatch, method, member, dest / "raw", outside)
    with pytest.raises(InvalidInputError, match="link"):
        safe_extract(tmp_path / "b.tar.gz", dest)
    assert list(outside.iterdir()) == []
    assert not (dest / "manifest.json").exists()  # what was written is removed


def test_a_destination_swapped_for_a_link_after_the_check_is_refused(tmp_path, monkeypatch, writer_kind):
    from protocol import archive

    out = make_bundle_dir(tmp_path)
    pack(out, tmp_path / "b.tar.gz")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "got"
    writer = archive._DirFdWriter if writer_kind == "dir-descriptors" else archive._PathWriter
    original = writer.__init__

    def swapped(self, root):
        root.rmdir()
        root.symlink_to(outside, target_is_directory=True)
        original(self, root)

    monkeypatch.setattr(writer, "__init__", swapped)
    with pytest.raises(InvalidInputError, match="link|plain directory"):
        safe_extract(tmp_path / "b.tar.gz", dest)
    assert list(outside.iterdir()) == []
