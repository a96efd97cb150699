"""What is installed, with versions, in full (``software/packages.json``) so two PCs or two
dates can be diffed, plus the versions of the applications the admin cares about.
"""

from __future__ import annotations

import shlex
from typing import Any

from ..context import CollectContext
from ..model import ItemStatus
from .base import ALL_PLATFORMS, Collector, as_list, iter_lines, powershell, read_json, read_text, slug

DPKG_ARGV = ("dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n")
RPM_ARGV = ("rpm", "-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n")
APP_VERSION_TIMEOUT = 5.0

WINDOWS_UNINSTALL_SCRIPT = (
    "$keys = @("
    "@{Scope='machine';Path='HKLM:\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*'},"
    "@{Scope='machine-x86';Path='HKLM:\\Software\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*'},"
    "@{Scope='user';Path='HKCU:\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*'}); "
    "$apps = foreach ($k in $keys) { Get-ItemProperty -Path $k.Path -ErrorAction SilentlyContinue | "
    "Where-Object { $_.DisplayName -and -not $_.SystemComponent } | "
    "Select-Object DisplayName,DisplayVersion,Publisher,InstallDate,@{n='Scope';e={$k.Scope}} }; "
    "ConvertTo-Json -InputObject @($apps) -Depth 3"
)


class SoftwareCollector(Collector):
    """The full package list of the platform's package database and admin-chosen app versions."""

    name = "software"
    category = "software"
    description = ("Installed packages with versions (dpkg/rpm, Windows uninstall entries, macOS applications and "
                   "receipts) and versions of admin-configured applications.")
    platforms = ALL_PLATFORMS
    timeout = 10.0

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        if ctx.which("dpkg-query"):
            manager, item = "dpkg", ctx.run("software/dpkg.tsv", DPKG_ARGV, timeout=8)
            packages = parse_dpkg(iter_lines(ctx, item))
        elif ctx.which("rpm"):
            manager, item = "rpm", ctx.run("software/rpm.tsv", RPM_ARGV, timeout=8)
            packages = parse_rpm(iter_lines(ctx, item))
        else:
            manager, packages = None, {}
            ctx.note("software/dpkg.tsv", shlex.join(DPKG_ARGV), ItemStatus.NOT_FOUND,
                     "neither dpkg nor rpm is installed")
        extras = {}
        if ctx.which("snap"):
            extras["snap"] = parse_table(iter_lines(ctx, ctx.run("software/snap.txt", ("snap", "list"), timeout=5)),
                                         skip_header=True)
        if ctx.which("flatpak"):
            extras["flatpak"] = parse_table(iter_lines(ctx, ctx.run(
                "software/flatpak.txt", ("flatpak", "list", "--columns=application,version"), timeout=5)),
                separator="\t")
        return self._finish(ctx, manager, packages, extras)

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        entries = as_list(read_json(ctx, ctx.run("software/windows-uninstall.json",
                                                 powershell(WINDOWS_UNINSTALL_SCRIPT), timeout=8)))
        packages: dict[str, str] = {}
        for entry in entries:
            if not isinstance(entry, dict) or not entry.get("DisplayName"):
                continue
            name, version = entry["DisplayName"].strip(), str(entry.get("DisplayVersion") or "")
            if name in packages and packages[name] != version:
                name = f"{name} [{entry.get('Scope') or 'other'}]"
            packages[name] = version
        return self._finish(ctx, "windows-uninstall", packages, {})

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        profile = read_json(ctx, ctx.run("software/applications.json",
                                         ("system_profiler", "SPApplicationsDataType", "-json"), timeout=9)) or {}
        packages: dict[str, str] = {}
        for app in as_list(profile.get("SPApplicationsDataType")):
            name, version = app.get("_name"), str(app.get("version") or "")
            if not name:
                continue
            if name in packages and packages[name] != version:
                name = f"{name} ({app.get('path')})"
            packages[name] = version
        receipts = [line.strip() for line in iter_lines(ctx, ctx.run("software/pkgutil-pkgs.txt",
                                                                     ("pkgutil", "--pkgs"), timeout=5))
                    if line.strip()]
        extras: dict[str, Any] = {"receipts": receipts}
        if ctx.which("brew"):
            extras["brew"] = parse_brew(iter_lines(ctx, ctx.run("software/brew.txt", ("brew", "list", "--versions"),
                                                                timeout=8)))
        return self._finish(ctx, "macos-applications", packages, extras)

    def _finish(self, ctx: CollectContext, manager: str | None, packages: dict[str, str],
                extras: dict[str, Any]) -> dict[str, Any]:
        # A list of {name, version} records, not a name -> version mapping: as mapping keys, package
        # names such as "passwd" would read like secret settings to the redactor.
        listing = package_listing(packages)
        ctx.write_json("software/packages.json", {"manager": manager, "packages": listing, **extras},
                       source=f"python:{manager or 'none'}")
        # The facts count the packages; the list itself is in packages.json only. Carried in the facts too, it
        # was a second copy of the largest table in the bundle (facts.json and the report), redacted twice.
        return {
            "package_manager": manager,
            "package_count": len(packages),
            **{f"{name}_count": len(value) for name, value in extras.items()},
            "apps": app_versions(ctx),
        }


def package_listing(packages: dict[str, str]) -> list[dict[str, str]]:
    """The package table as records sorted by name, the form bundles carry."""
    return [{"name": name, "version": version} for name, version in sorted(packages.items())]


def package_versions(listing: Any) -> dict[str, str]:
    """Name -> version from a package listing (records, or the older mapping form)."""
    if isinstance(listing, dict):
        return {str(name): str(version) for name, version in listing.items()}
    if isinstance(listing, list):
        return {str(r["name"]): str(r.get("version", "")) for r in listing if isinstance(r, dict) and "name" in r}
    return {}


def app_versions(ctx: CollectContext) -> dict[str, dict[str, Any]]:
    """Run each admin-configured version command; the version is its first non-empty output line."""
    found = {}
    for name, argv in sorted(ctx.options.app_versions.items()):
        item, result = ctx.execute(f"software/apps/{slug(name)}.txt", argv, APP_VERSION_TIMEOUT,
                                   max_bytes=64 * 1024)
        lines = [line for line in (read_text(ctx, item) or "").splitlines() if line.strip()]
        if not lines and result is not None:  # `java -version` and friends print to stderr
            lines = [line for line in result.stderr_tail.splitlines() if line.strip()]
        found[name] = {
            "version": lines[0].strip()[:200] if lines and item.status in (ItemStatus.OK, ItemStatus.TRUNCATED)
            else None,
            "status": item.status.value,
        }
    return found


def parse_dpkg(lines) -> dict[str, str]:
    """Parse :data:`DPKG_ARGV` output into installed package -> version (``name:arch`` for a second arch)."""
    packages: dict[str, str] = {}
    arches: dict[str, str] = {}
    for line in lines:
        fields = line.split("\t")
        if len(fields) != 4:
            continue
        status, name, version, arch = fields
        # The second letter of db:Status-Abbrev is the current state; "i" is installed
        # (removed packages that left config files behind are "c" and skipped).
        if len(status) < 2 or status[1] != "i" or not name:
            continue
        key = name if arches.setdefault(name, arch) == arch else f"{name}:{arch}"
        packages[key] = version
    return packages


def parse_rpm(lines) -> dict[str, str]:
    """Parse :data:`RPM_ARGV` output into package -> version-release.

    A second architecture gets its own key (``name.arch``); several versions of
    one package and architecture (kernels) share the key, space-separated.
    """
    packages: dict[str, str] = {}
    arches: dict[str, str] = {}
    for line in lines:
        fields = line.split("\t")
        if len(fields) != 3 or not fields[0]:
            continue
        name, version, arch = fields
        key = name if arches.setdefault(name, arch) == arch else f"{name}.{arch}"
        packages[key] = f"{packages[key]} {version}" if key in packages else version
    return packages


def parse_brew(lines) -> dict[str, str]:
    """Parse ``brew list --versions`` (``name v1 [v2 ...]``; the last version is the linked one)."""
    packages = {}
    for line in lines:
        fields = line.split()
        if len(fields) >= 2:
            packages[fields[0]] = fields[-1]
    return packages


def parse_table(lines, *, skip_header: bool = False, separator: str | None = None) -> dict[str, str]:
    """Parse two-column-or-more listings (``snap list``, ``flatpak list``) into name -> version."""
    packages = {}
    for index, line in enumerate(lines):
        if skip_header and index == 0:
            continue
        fields = line.split(separator) if separator else line.split()
        if len(fields) >= 2 and fields[0].strip():
            packages[fields[0].strip()] = fields[1].strip()
    return packages

