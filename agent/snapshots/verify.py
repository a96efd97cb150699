"""Prove that a snapshot can be restored: restore a small random sample of its files and compare them.

The sample is restored into a private (0700) temporary folder, then each
file's size is compared with what the snapshot lists, and its SHA-256 with
the original file's where the original has not changed since the snapshot
(same size and modification time), so the check covers the whole way from
the user's disk through the repository and back. Restic itself checks every
piece it reads against its authenticated hash, so a damaged repository fails
the restore, and the check with it.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath

from protocol.errors import HelplineError

from . import restic as R

#: Nodes read from a snapshot's listing to draw the sample from.
LISTING_LIMIT = 50_000
#: Characters restic's --include reads as a pattern; files named with them are left out of a sample.
_PATTERN_CHARS = frozenset("*?[]\\")


@dataclass(frozen=True)
class VerifyResult:
    """How a sample restore went: ``ok`` only when every sampled file came back whole."""

    snapshot_id: str
    at: datetime
    files_checked: int
    bytes_checked: int
    ok: bool
    detail: str


def choose_sample(nodes: tuple[R.Node, ...], *, files: int, max_bytes: int, rng: random.Random) -> list[R.Node]:
    """Return up to ``files`` regular files of ``nodes``, drawn at random, together at most ``max_bytes`` (but at
    least the smallest one, so a snapshot of big files is still checked)."""
    candidates = [node for node in nodes if node.type == "file" and node.size is not None
                  and not (_PATTERN_CHARS & set(node.path))]
    rng.shuffle(candidates)
    chosen: list[R.Node] = []
    room = max_bytes
    for node in candidates:
        if len(chosen) >= files:
            break
        if node.size <= room:
            chosen.append(node)
            room -= node.size
    if not chosen and candidates:
        chosen.append(min(candidates, key=lambda node: node.size or 0))
    return chosen


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _restored_path(folder: Path, original: str) -> Path:
    """Where restic puts ``original`` under a restore target: the path below its root (a drive letter becomes a folder)."""
    pure = PurePath(original)
    parts = list(pure.parts)
    head = parts.pop(0)
    drive = head.rstrip(":\\/").rstrip(":")
    return folder.joinpath(*([drive] if drive else []), *parts)


def _unchanged(node: R.Node, original: Path) -> bool:
    """True when the original file still has the size and modification time the snapshot recorded."""
    try:
        info = original.stat()
    except OSError:
        return False
    if node.mtime is None or info.st_size != node.size:
        return False
    return abs(info.st_mtime - node.mtime.timestamp()) < 1e-3


def sample_restore(
    restic: R.Restic,
    repository: R.Repository,
    *,
    snapshot: R.Snapshot,
    files: int,
    max_bytes: int,
    now: datetime,
    rng: random.Random | None = None,
    workdir: Path | None = None,
    no_lock: bool = False,
    cancel: threading.Event | None = None,
) -> VerifyResult:
    """Restore a random sample of ``snapshot``'s files into a private temporary folder and compare them.

    Never raises for what it finds (a damaged repository, a file that came back
    wrong): that is a result with ``ok`` False and the reason in ``detail``.
    Cancelling (``cancel``) raises :class:`~.restic.ResticCancelled`.
    """
    rng = rng or random.Random()

    def result(ok: bool, detail: str, count: int = 0, size: int = 0) -> VerifyResult:
        return VerifyResult(snapshot.id, now, count, size, ok, detail[:2000])

    try:
        listing = R.ls(restic, repository, snapshot=snapshot.id, recursive=True, limit=LISTING_LIMIT, no_lock=no_lock)
    except R.ResticCancelled:
        raise
    except HelplineError as exc:
        return result(False, f"could not list snapshot {snapshot.short_id}: {exc.message}")
    sample = choose_sample(listing.nodes, files=files, max_bytes=max_bytes, rng=rng)
    if not sample:
        return result(True, f"snapshot {snapshot.short_id} holds no files to restore")
    folder = Path(tempfile.mkdtemp(prefix="helpline-verify-", dir=workdir))
    os.chmod(folder, 0o700)
    try:
        try:
            R.restore(restic, repository, snapshot=snapshot.id, target=folder, includes=[n.path for n in sample],
                      no_lock=no_lock, cancel=cancel)
        except R.ResticCancelled:
            raise
        except HelplineError as exc:
            return result(False, f"restoring a sample of snapshot {snapshot.short_id} failed: {exc.message}")
        compared = 0
        size = 0
        for node in sample:
            restored = _restored_path(folder, node.path)
            if not restored.is_file():
                return result(False, f"{node.path} did not come back from snapshot {snapshot.short_id}",
                              compared, size)
            got = restored.stat().st_size
            if got != node.size:
                return result(False, f"{node.path} came back with {got} bytes, the snapshot lists {node.size}",
                              compared, size)
            digest = sha256_of(restored)
            original = Path(node.path)
            if _unchanged(node, original) and sha256_of(original) != digest:
                return result(False, f"{node.path} came back different from the original (SHA-256 differs)",
                              compared, size)
            compared += _unchanged(node, original)
            size += got
        detail = (f"{len(sample)} file(s) of snapshot {snapshot.short_id} restored whole; "
                  f"{compared} matched the unchanged original by SHA-256")
        return result(True, detail, len(sample), size)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
