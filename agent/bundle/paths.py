"""Where each entry lives under ``raw/``: its staging path redacted with everything the redactor
knows, made safe to unpack on any OS, unique, and neutral when the final check flags it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath

from agent.redaction import Redactor

from .entries import BundleEntry
from agent.regexes import rx

_WINDOWS_RESERVED = rx(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_MAX_COMPONENT_BYTES = 200


def safe_bundle_path(relpath: str) -> str:
    """Return ``relpath`` with every component made safe to unpack on any OS (letters, digits, ``._-``)."""
    parts = []
    for part in relpath.split("/"):
        clean = re.sub(r"[^\w.\-]", "_", part).strip(" .") or "_"
        if _WINDOWS_RESERVED.match(clean):
            clean = "_" + clean
        while len(clean.encode("utf-8")) > _MAX_COMPONENT_BYTES:
            clean = clean[:-1]
        parts.append(clean)
    return "/".join(parts)


def unique_path(path: str, taken: set[str]) -> str:
    """Return ``path``, or a numbered variant, that no taken path equals or nests with (ignoring case)."""
    candidate, number = path, 2
    stem, dot, suffix = path.rpartition(".")

    def clashes(name: str) -> bool:
        key = name.casefold()
        return key in taken or any(key.startswith(t + "/") or t.startswith(key + "/") for t in taken)

    while clashes(candidate):
        candidate = f"{stem}-{number}.{suffix}" if dot and "/" not in suffix else f"{path}-{number}"
        number += 1
    taken.add(candidate.casefold())
    return candidate


def assign_paths(entries: list[BundleEntry], redactor: Redactor, raw_root: Path) -> None:
    """Give every entry its bundle path: its staging path redacted with all the redactor knows, made safe, unique.

    Called before scrubbing and again after the metadata is redacted (the
    redactor may have learned a user or host name since); bundled files whose
    path changed are moved, through temporary names so no move overwrites
    another file.
    """
    taken: set[str] = set()
    moves: list[tuple[BundleEntry, str]] = []
    for entry in entries:
        redacted, _ = redactor.redact_text(entry.staged_relpath)
        # Unlisted entries are only named, never written: they need no room of their own.
        new_path = unique_path(safe_bundle_path(redacted), taken) if entry.listed else safe_bundle_path(redacted)
        if entry.path and entry.bundled and new_path != entry.path:
            moves.append((entry, new_path))
        else:
            entry.path = new_path
    parked = []
    for number, (entry, new_path) in enumerate(moves):
        old = raw_root.joinpath(*entry.path.split("/"))
        temporary = raw_root / f".moving-{number}"
        os.replace(old, temporary)
        prune_empty_dirs(old.parent, raw_root)
        parked.append((entry, new_path, temporary))
    for entry, new_path, temporary in parked:
        target = raw_root.joinpath(*new_path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, target)
        entry.path = new_path


def rename_flagged_paths(entries: list[BundleEntry], redactor: Redactor, raw_root: Path) -> None:
    """Give entries whose bundle path the final check flags (a name inside a longer word) a neutral path.

    File names are not scanned by the final check but end up in the manifest
    and the archive, so a flagged path becomes ``<category>/withheld-<n>.<ext>``.
    Paths are judged as the manifest holds them: JSON strings.
    """
    as_json = {json.dumps(entry.path, ensure_ascii=False): entry.path for entry in entries}
    flagged = {as_json[text] for text in redactor.flags(as_json)}
    if not flagged:
        return
    taken = {entry.path.casefold() for entry in entries if entry.path not in flagged}
    for number, entry in enumerate(e for e in entries if e.path in flagged):
        suffix = PurePosixPath(entry.path).suffix
        suffix = suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix) else ""
        new_path = unique_path(f"{safe_bundle_path(entry.category)}/withheld-{number + 1}{suffix}", taken)
        if entry.bundled:
            old = raw_root.joinpath(*entry.path.split("/"))
            target = raw_root.joinpath(*new_path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, target)
            prune_empty_dirs(old.parent, raw_root)
        entry.path = new_path


def prune_empty_dirs(directory: Path, root: Path) -> None:
    """Remove ``directory`` and its parents up to (not including) ``root`` while they are empty."""
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
