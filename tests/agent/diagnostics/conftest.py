"""Shared fixtures for the diagnostics tests: a runner that serves recorded command outputs
(Windows and macOS cannot run here) and contexts built around it."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest

from agent.diagnostics.context import CollectContext, CollectOptions
from agent.diagnostics.model import ItemStatus
from agent.diagnostics.runner import CommandResult

FIXTURES = Path(__file__).parent / "fixtures"


class FixtureRunner:
    """A command runner that answers from recorded outputs instead of running anything.

    Each rule is ``(program, needle, fixture, exit_code)``: the first rule whose
    program is argv[0] and whose needle occurs in the command line serves the
    fixture file (capped like the real runner). Other commands are ``not_found``,
    like a binary missing from the PC. ``calls`` keeps every command line asked for.
    """

    def __init__(self, rules: Sequence[tuple[str, str, str, int]]):
        self.rules = list(rules)
        self.calls: list[str] = []
        self.unmatched: list[str] = []

    def which(self, name: str) -> str | None:
        return f"/recorded/bin/{name}" if any(rule[0] == name for rule in self.rules) else None

    def __call__(self, argv, dest: Path, *, timeout: float, max_bytes: int, env=None) -> CommandResult:
        line = shlex.join(argv)
        self.calls.append(line)
        for program, needle, fixture, exit_code in self.rules:
            if argv[0] == program and needle in line:
                data = (FIXTURES / fixture).read_bytes()
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data[:max_bytes])
                truncated = len(data) > max_bytes
                if exit_code:
                    status = ItemStatus.ERROR
                else:
                    status = ItemStatus.TRUNCATED if truncated else ItemStatus.OK
                return CommandResult(tuple(argv), status, exit_code, 0.01, min(len(data), max_bytes), truncated, "")
        self.unmatched.append(line)
        return CommandResult(tuple(argv), ItemStatus.NOT_FOUND, None, 0.0, 0, False, "",
                             note=f"{argv[0]} is not installed or not on PATH")


WINDOWS_RULES = [
    ("powershell.exe", "WmiMonitorID", "windows/display.json", 0),
    # First: these scripts also name cmdlets the older rules below look for.
    ("powershell.exe", "41,6008", "windows/system-events.json", 0),
    ("powershell.exe", "Get-Printer", "windows/printers.json", 0),
    ("w32tm", "/query /status", "windows/w32tm-status.txt", 0),
    ("query", "user", "windows/query-user.txt", 0),
    ("powershell.exe", "Microsoft.Update.Session", "windows/update-history.json", 0),
    ("powershell.exe", "Win32_PnPEntity", "windows/devices.json", 0),
    ("powershell.exe", "Get-PhysicalDisk", "windows/storage.json", 0),
    ("netsh", "wlan show interfaces", "windows/netsh-wlan.txt", 0),
    ("netsh", "advfirewall", "windows/netsh-firewall.txt", 0),
    ("powershell.exe", "Win32_OperatingSystem", "windows/os.json", 0),
    ("systeminfo", "/fo csv", "windows/systeminfo.csv", 0),
    ("powershell.exe", "Win32_Processor", "windows/hardware.json", 0),
    ("powershell.exe", "Get-NetRoute", "windows/network.json", 0),
    ("netsh", "winhttp show proxy", "windows/winhttp-proxy.txt", 0),
    ("ipconfig", "/all", "windows/ipconfig.txt", 0),
    ("powershell.exe", "Get-Service", "windows/services.json", 0),
    ("powershell.exe", "CurrentVersion\\Uninstall", "windows/uninstall.json", 0),
    ("powershell.exe", "Get-WinEvent", "windows/events.json", 0),
]

DARWIN_RULES = [
    ("system_profiler", "SPDisplaysDataType", "darwin/displays.json", 0),
    ("last", "-n", "darwin/last.txt", 0),
    ("log", "Previous shutdown cause", "darwin/shutdown-cause.txt", 0),
    ("lpstat", "-t", "darwin/lpstat-t.txt", 0),
    ("lpstat", "-l -p", "darwin/lpstat-t.txt", 0),
    ("systemsetup", "-getusingnetworktime", "darwin/network-time.txt", 0),
    ("who", "", "darwin/who.txt", 0),
    ("networksetup", "-getairportnetwork", "darwin/airport-network.txt", 0),
    ("/usr/libexec/ApplicationFirewall/socketfilterfw", "--getglobalstate", "darwin/firewall-state.txt", 0),
    ("softwareupdate", "--history", "darwin/softwareupdate-history.txt", 0),
    ("system_profiler", "SPUSBDataType", "darwin/usb.json", 0),
    ("diskutil", "info", "darwin/diskutil-info.txt", 0),
    ("fdesetup", "status", "darwin/fdesetup-status.txt", 0),
    ("sw_vers", "", "darwin/sw_vers.txt", 0),
    ("sysctl", "kern.boottime", "darwin/kern-boottime.txt", 0),
    ("sysctl", "machdep.cpu.brand_string", "darwin/cpu-brand.txt", 0),
    ("uname", "-a", "darwin/uname.txt", 0),
    ("defaults", "AppleLocale", "darwin/apple-locale.txt", 0),
    ("system_profiler", "SPHardwareDataType", "darwin/sphardware.json", 0),
    ("system_profiler", "SPApplicationsDataType", "darwin/applications.json", 0),
    ("df", "-kP", "darwin/df-kP.txt", 0),
    ("pmset", "batt", "darwin/pmset-batt.txt", 0),
    ("route", "get default", "darwin/route-default.txt", 0),
    ("scutil", "--dns", "darwin/scutil-dns.txt", 0),
    ("scutil", "--proxy", "darwin/scutil-proxy.txt", 0),
    ("launchctl", "list", "darwin/launchctl-list.txt", 0),
    ("pkgutil", "--pkgs", "darwin/pkgutil-pkgs.txt", 0),
    ("brew", "--versions", "darwin/brew.txt", 0),
    ("log", "show", "darwin/log-show.txt", 0),
]


@pytest.fixture
def windows_runner() -> FixtureRunner:
    return FixtureRunner(WINDOWS_RULES)


@pytest.fixture
def darwin_runner() -> FixtureRunner:
    return FixtureRunner(DARWIN_RULES)


@pytest.fixture
def windows_env(tmp_path: Path) -> dict[str, str]:
    """A Windows-like environment whose profile folders live under tmp_path."""
    profile = tmp_path / "Users" / "anna"
    local = profile / "AppData" / "Local"
    program_data = tmp_path / "ProgramData"
    local.mkdir(parents=True)
    program_data.mkdir()
    return {
        "USERPROFILE": str(profile), "LOCALAPPDATA": str(local), "PROGRAMDATA": str(program_data),
        "USERNAME": "anna", "COMPUTERNAME": "DESKTOP-7KQ2M4L", "Path": r"C:\Windows\system32;C:\Windows",
        "HTTPS_PROXY": "http://proxy.corp.example.com:8080", "GITHUB_TOKEN": "ghp_not-for-the-bundle",
    }


@pytest.fixture
def make_ctx(tmp_path: Path):
    """Build a collector context in a fresh staging directory: make_ctx(platform, runner=None, **options)."""

    def build(platform: str = "linux", runner: FixtureRunner | None = None, *, category: str | None = None,
              env: dict[str, str] | None = None, home: Path | None = None, timeout: float = 15.0,
              forbidden: Sequence[str] = (), now: datetime | None = None, **options) -> CollectContext:
        stage = tmp_path / f"stage-{platform}-{category or 'root'}"
        stage.mkdir(exist_ok=True)
        root = CollectContext(
            stage, platform, CollectOptions(**options),
            command_runner=runner, which=runner.which if runner else None, env=env, home=home, now=now,
        )
        return root.for_collector(category, timeout, forbidden) if category else root

    return build
