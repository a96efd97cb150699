"""What changed on a PC between two of its bundles: packages, services, disks, errors, OS and
memory — the "it worked last week" question answered from two ``helpline share`` runs.

Bundles are read from a bundle directory or straight from an archive (validated by
:func:`~protocol.archive.inspect_archive`, members read in memory, nothing
extracted). Only ``manifest.json``, ``summary.json`` and ``raw/software/packages.json``
are read; each is size-capped and treated as untrusted JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.diagnostics.collectors.software import package_versions
from protocol.archive import inspect_archive
from protocol.bundle import MANIFEST_MAX_BYTES, MANIFEST_NAME, SUMMARY_MAX_BYTES, SUMMARY_NAME, raw_member
from protocol.errors import InvalidInputError, NotFoundError

from .summary import dig

PACKAGES_MEMBER = raw_member("software/packages.json")
DISK_CHANGE_POINTS = 5.0
DISK_FULL_PERCENT = 90.0
_PACKAGES_MAX = 64 << 20
_DEFAULT_LINES = 40


@dataclass
class BundleSide:
    """One of the two bundles: where it came from, when it was made and for which PC."""

    source: str
    created_at: str | None
    hostname: str | None


@dataclass
class BundleDiff:
    """The changes from the older bundle (``before``) to the newer one (``after``)."""

    before: BundleSide
    after: BundleSide
    notes: list[str] = field(default_factory=list)
    os: list[dict[str, Any]] = field(default_factory=list)  # [{field, before, after}]
    memory: dict[str, Any] | None = None  # {before, after} total bytes, when it changed
    packages: dict[str, list[dict[str, Any]]] | None = None  # added, removed, upgraded, downgraded
    services: dict[str, list[str]] | None = None  # newly_failed, recovered, newly_stopped
    disks: dict[str, list[dict[str, Any]]] | None = None  # new_mounts, removed_mounts, usage, newly_full
    errors: dict[str, list[dict[str, Any]]] | None = None  # new, gone, more, fewer
    crashes: dict[str, Any] | None = None  # {before, after} counts, when they differ

    @property
    def empty(self) -> bool:
        """True when nothing worth reporting changed."""
        return not (self.os or self.memory or self.crashes
                    or any(any(group.values()) for group in (self.packages, self.services, self.disks, self.errors)
                           if group))

    def to_dict(self) -> dict[str, Any]:
        """Return the diff as plain JSON types."""
        return asdict(self)

    def render_text(self, max_lines: int = _DEFAULT_LINES) -> list[str]:
        """Return the diff as at most ``max_lines`` lines, long lists cut to a few entries and "+N more"."""
        return _render(self, max(4, max_lines))


def diff_bundles(a: Path | str, b: Path | str) -> BundleDiff:
    """Compare two bundles of one PC (each a bundle directory or a ``.tar.gz`` archive).

    The older one (by the manifests' ``created_at``; argument order if unknown)
    is ``before``. Raise NotFoundError for a path that does not exist and
    InvalidInputError for an archive or document that is refused.
    """
    first, second = _load(Path(a)), _load(Path(b))
    if first.created and second.created and second.created < first.created:
        first, second = second, first
    diff = BundleDiff(before=first.side, after=second.side)
    if first.side.hostname and second.side.hostname and first.side.hostname != second.side.hostname:
        diff.notes.append(f"the bundles name different PCs ({first.side.hostname} and {second.side.hostname})")
    old, new = first.summary, second.summary
    diff.os = _os_changes(old, new)
    old_memory = dig(old, "hardware", "memory_total")
    new_memory = dig(new, "hardware", "memory_total")
    if _is_num(old_memory) and _is_num(new_memory) and old_memory != new_memory:
        diff.memory = {"before": old_memory, "after": new_memory}
    if first.packages is None or second.packages is None:
        missing = first.side.source if first.packages is None else second.side.source
        diff.notes.append(f"no package list in {missing}; packages not compared")
    else:
        diff.packages = _package_changes(first.packages, second.packages)
    diff.services = _service_changes(old, new, diff.notes)
    diff.disks = _disk_changes(old, new)
    diff.errors = _error_changes(old, new)
    old_crashes, new_crashes = dig(old, "crashes", "count"), dig(new, "crashes", "count")
    if _is_num(old_crashes) and _is_num(new_crashes) and old_crashes != new_crashes:
        diff.crashes = {"before": old_crashes, "after": new_crashes}
    return diff


# -- loading ---------------------------------------------------------------------------


@dataclass
class _Loaded:
    side: BundleSide
    created: datetime | None
    summary: dict[str, Any]
    packages: dict[str, str] | None


def _load(path: Path) -> _Loaded:
    if path.is_dir():
        manifest = _json(_read_capped(path / MANIFEST_NAME, MANIFEST_MAX_BYTES), f"{path.name}/{MANIFEST_NAME}")
        summary = _json(_read_capped(path / SUMMARY_NAME, SUMMARY_MAX_BYTES), f"{path.name}/{SUMMARY_NAME}")
        packages_path = path.joinpath(*PACKAGES_MEMBER.split("/"))
        packages_raw = _read_capped(packages_path, _PACKAGES_MAX) if packages_path.is_file() else None
    elif path.is_file():
        listing = inspect_archive(path)
        wanted = {MANIFEST_NAME: MANIFEST_MAX_BYTES, SUMMARY_NAME: SUMMARY_MAX_BYTES}
        members = {name: listing.read_member(name, cap) for name, cap in wanted.items()}
        manifest = _json(members[MANIFEST_NAME], f"{path.name}:{MANIFEST_NAME}")
        summary = _json(members[SUMMARY_NAME], f"{path.name}:{SUMMARY_NAME}")
        packages_raw = listing.read_member(PACKAGES_MEMBER, _PACKAGES_MAX) if PACKAGES_MEMBER in listing else None
    else:
        raise NotFoundError(f"there is no bundle at {path}", hint="give a bundle directory or a .tar.gz archive")
    packages = None
    if packages_raw is not None:
        document = _json(packages_raw, f"{path.name}:{PACKAGES_MEMBER}")
        table = document.get("packages")
        if isinstance(table, dict | list):
            packages = package_versions(table)
    created_text = manifest.get("created_at") if isinstance(manifest.get("created_at"), str) else None
    try:
        created = datetime.fromisoformat(created_text) if created_text else None
    except ValueError:
        created = None
    hostname = manifest.get("hostname") or summary.get("hostname")
    side = BundleSide(str(path), created_text, hostname if isinstance(hostname, str) else None)
    return _Loaded(side, created, summary, packages)


def _read_capped(path: Path, cap: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(cap + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{path} is missing; is this a bundle directory?") from None
    if len(data) > cap:
        raise InvalidInputError(f"{path} is larger than {cap} bytes")
    return data


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError(f"{what} is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"{what} is not a JSON object")
    return document


# -- comparisons -----------------------------------------------------------------------


def _os_changes(old: dict, new: dict) -> list[dict[str, Any]]:
    changes = []
    for key in ("name", "version", "build", "kernel", "architecture"):
        before, after = dig(old, "os", key), dig(new, "os", key)
        if before != after and (before is not None or after is not None):
            changes.append({"field": key, "before": before, "after": after})
    return changes


def _package_changes(old: dict[str, str], new: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    changes: dict[str, list[dict[str, Any]]] = {"added": [], "removed": [], "upgraded": [], "downgraded": []}
    for name in sorted(new.keys() - old.keys()):
        changes["added"].append({"name": name, "version": new[name]})
    for name in sorted(old.keys() - new.keys()):
        changes["removed"].append({"name": name, "version": old[name]})
    for name in sorted(old.keys() & new.keys()):
        if old[name] != new[name]:
            kind = "upgraded" if version_key(new[name]) > version_key(old[name]) else "downgraded"
            changes[kind].append({"name": name, "before": old[name], "after": new[name]})
    return changes


def version_key(version: str) -> tuple:
    """Return a sort key for package versions: epoch first, digit runs as numbers, ``~`` before anything.

    Close to dpkg and rpm ordering for the versions people see, without
    claiming to be either; it only decides "upgraded" versus "downgraded".
    """
    epoch, _, rest = version.partition(":") if re.match(r"^\d+:", version) else ("0", "", version)
    parts: list[tuple[int, Any]] = []
    for token in re.findall(r"\d+|[A-Za-z]+|~|[^\w~]+", rest):
        if token == "~":
            parts.append((-2, ""))  # before everything, even the end: 1.0~rc1 < 1.0
        elif token.isdigit():
            parts.append((2, int(token)))
        elif token.isalpha():
            parts.append((1, token))
        else:
            parts.append((0, token))
    parts.append((-1, ""))  # the end sorts before any further part: 1.0 < 1.0.1
    return (int(epoch), tuple(parts))


def _service_changes(old: dict, new: dict, notes: list[str]) -> dict[str, list[str]] | None:
    before, after = dig(old, "services") or {}, dig(new, "services") or {}
    old_failed, new_failed = _str_list(before.get("failed")), _str_list(after.get("failed"))
    old_stopped, new_stopped = _str_list(before.get("stopped_enabled")), _str_list(after.get("stopped_enabled"))
    if old_failed is None or new_failed is None:
        notes.append("failed services are unknown in one bundle; not compared")
        old_failed = new_failed = []
    if old_stopped is None or new_stopped is None:
        old_stopped = new_stopped = []
    return {
        "newly_failed": sorted(set(new_failed) - set(old_failed)),
        "recovered": sorted(set(old_failed) - set(new_failed)),
        "newly_stopped": sorted(set(new_stopped) - set(old_stopped)),
    }


def _disk_changes(old: dict, new: dict) -> dict[str, list[dict[str, Any]]]:
    before = {d["mount"]: d for d in _dict_list(old.get("disks")) if isinstance(d.get("mount"), str)}
    after = {d["mount"]: d for d in _dict_list(new.get("disks")) if isinstance(d.get("mount"), str)}
    changes: dict[str, list[dict[str, Any]]] = {"new_mounts": [], "removed_mounts": [], "usage": [], "newly_full": []}
    for mount in sorted(after.keys() - before.keys()):
        changes["new_mounts"].append({"mount": mount, "used_percent": after[mount].get("used_percent")})
    for mount in sorted(before.keys() - after.keys()):
        changes["removed_mounts"].append({"mount": mount, "used_percent": before[mount].get("used_percent")})
    for mount in sorted(after):
        now = after[mount].get("used_percent")
        was = before.get(mount, {}).get("used_percent")
        if not _is_num(now):
            continue
        if _is_num(was) and abs(now - was) >= DISK_CHANGE_POINTS:
            changes["usage"].append({"mount": mount, "before": was, "after": now, "change": round(now - was, 1)})
        if now >= DISK_FULL_PERCENT and not (_is_num(was) and was >= DISK_FULL_PERCENT):
            changes["newly_full"].append({"mount": mount, "before": was, "after": now})
    return changes


def _error_changes(old: dict, new: dict) -> dict[str, list[dict[str, Any]]]:
    def table(summary: dict) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in _dict_list(dig(summary, "errors", "top")):
            if isinstance(entry.get("message"), str):
                counts[entry["message"]] = entry.get("count") if _is_num(entry.get("count")) else 0
        return counts

    before, after = table(old), table(new)
    by_count = dict(sorted(after.items(), key=lambda pair: -pair[1]))
    return {
        "new": [{"message": m, "count": c} for m, c in by_count.items() if m not in before],
        "gone": [{"message": m, "count": c} for m, c in before.items() if m not in after],
        "more": [{"message": m, "before": before[m], "after": c} for m, c in after.items()
                 if m in before and c > before[m]],
        "fewer": [{"message": m, "before": before[m], "after": c} for m, c in after.items()
                  if m in before and c < before[m]],
    }


# -- rendering --------------------------------------------------------------------------


def _render(diff: BundleDiff, max_lines: int) -> list[str]:
    """Lay the diff out in sections, shrinking every list until the whole fits ``max_lines``."""
    title = (f"Changes on {diff.after.hostname or diff.before.hostname or 'this PC'}: "
             f"{_when(diff.before.created_at)} -> {_when(diff.after.created_at)}")
    sections = _sections(diff)
    notes = [f"note: {note}" for note in diff.notes]
    if not sections:
        return ([title, "No differences in packages, services, disks, errors, OS or memory."] + notes)[:max_lines]
    for cap in range(10, -1, -1):
        lines = [title]
        for header, details in sections:
            lines.append(header)
            if cap:
                lines += [f"  {detail}" for detail in details[:cap]]
                if len(details) > cap:
                    lines.append(f"  ... +{len(details) - cap} more")
        lines += notes
        if len(lines) <= max_lines:
            return lines
    return lines[: max_lines - 1] + [f"... +{len(lines) - max_lines + 1} more lines"]


def _sections(diff: BundleDiff) -> list[tuple[str, list[str]]]:
    sections: list[tuple[str, list[str]]] = []
    if diff.os:
        sections.append(("OS: " + "; ".join(f"{c['field']} {c['before']} -> {c['after']}" for c in diff.os), []))
    if diff.memory:
        sections.append((f"Memory: {_gib(diff.memory['before'])} -> {_gib(diff.memory['after'])}", []))
    packages = diff.packages or {}
    if any(packages.values()):
        counts = ", ".join(f"{len(packages[k])} {k}" for k in ("upgraded", "added", "removed", "downgraded")
                           if packages.get(k))
        details = [f"^ {p['name']} {p['before']} -> {p['after']}" for p in packages.get("upgraded", [])]
        details += [f"+ {p['name']} {p['version']}" for p in packages.get("added", [])]
        details += [f"- {p['name']} {p['version']}" for p in packages.get("removed", [])]
        details += [f"v {p['name']} {p['before']} -> {p['after']}" for p in packages.get("downgraded", [])]
        sections.append((f"Packages: {counts}", details))
    services = diff.services or {}
    if any(services.values()):
        details = [f"failed now: {name}" for name in services.get("newly_failed", [])]
        details += [f"recovered: {name}" for name in services.get("recovered", [])]
        details += [f"stopped now: {name}" for name in services.get("newly_stopped", [])]
        sections.append((f"Services: {len(services.get('newly_failed', []))} newly failed, "
                         f"{len(services.get('recovered', []))} recovered", details))
    disks = diff.disks or {}
    if any(disks.values()):
        details = [f"FULL now: {d['mount']} {d['after']:g} %" for d in disks.get("newly_full", [])]
        details += [f"{d['mount']} {d['before']:g} % -> {d['after']:g} %" for d in disks.get("usage", [])]
        details += [f"new mount: {d['mount']}" for d in disks.get("new_mounts", [])]
        details += [f"gone: {d['mount']}" for d in disks.get("removed_mounts", [])]
        sections.append((f"Disks: {len(disks.get('newly_full', []))} newly full, "
                         f"{len(disks.get('usage', []))} changed by {DISK_CHANGE_POINTS:g}+ points", details))
    errors = diff.errors or {}
    if any(errors.values()):
        details = [f"new ({e['count']}x): {_short(e['message'])}" for e in errors.get("new", [])]
        details += [f"more ({e['before']} -> {e['after']}): {_short(e['message'])}" for e in errors.get("more", [])]
        details += [f"fewer ({e['before']} -> {e['after']}): {_short(e['message'])}" for e in errors.get("fewer", [])]
        details += [f"gone: {_short(e['message'])}" for e in errors.get("gone", [])]
        sections.append((f"Errors: {len(errors.get('new', []))} new, {len(errors.get('gone', []))} gone", details))
    if diff.crashes:
        sections.append((f"Crashes: {diff.crashes['before']} -> {diff.crashes['after']}", []))
    return sections


# -- small helpers ---------------------------------------------------------------------


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _str_list(value: Any) -> list[str] | None:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else None


def _dict_list(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _when(text: str | None) -> str:
    if not text:
        return "?"
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return text


def _gib(value: Any) -> str:
    return f"{value / (1 << 30):.1f} GiB" if _is_num(value) else "?"


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
