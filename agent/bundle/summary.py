"""The triage summary of a diagnostics run: a small JSON document with stable keys that an
engineer (or the server's ticket view) reads first, derived only from the collectors' facts.

Every section is built defensively: a collector that did not run, failed or
returned facts of an unexpected shape turns its keys into ``null`` instead of
raising, because a summary with holes is still worth sending. The full package
list is not here (only its count); it stays in ``raw/software/packages.json``,
which is what bundle diffs read.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from agent.diagnostics.collectors.hardware import DISK_FULL_PERCENT, SCRATCH_FULL_PERCENT
from agent.diagnostics.collectors.kernel import signal_name
from agent.diagnostics.collectors.netconfig import WEAK_SIGNAL_PERCENT
from agent.diagnostics.model import CollectionReport, CollectorStatus
from agent.regexes import rx

SUMMARY_SCHEMA_VERSION = 1
TOP_PROCESSES = 5
#: The user's answers to the three questions, in the order ``helpline share`` asks them.
ANSWER_KEYS = ("what_happened", "since_when", "already_tried")
#: The idle pseudo-process of Windows: never worth a top-CPU row (idle Linux kernel threads are spotted by shape).
_IDLE_PROCESSES = frozenset({"System Idle Process", "Idle"})
TOP_ERRORS = 10
RECENT_CRASHES = 10

#: The top-level keys every summary has, in order (a value may be null).
SUMMARY_KEYS: tuple[str, ...] = (
    "schema_version", "platform", "answers", "os", "hostname", "uptime", "uptime_seconds", "boot_time", "timezone",
    "hardware", "disks", "disk_full", "tmpfs_full", "inode_full", "storage", "devices", "network", "netconfig",
    "services", "software", "updates", "errors", "kernel", "crashes", "printers", "clock", "display", "processes",
    "attention", "collection",
)


def build_summary(report: CollectionReport, *, excluded: Iterable[str] = (),
                  answers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the triage summary of ``report`` (whose facts should already be redacted).

    Collectors of ``excluded`` categories count as absent. ``answers`` are the
    user's (redacted) answers to the three questions, kept so the summary alone
    says what the user saw. Never raises for missing or malformed facts; their
    keys are null.
    """
    facts = _facts_by_collector(report, set(excluded))
    system = facts.get("system")
    hardware = facts.get("hardware")
    disks = _disks(hardware)
    summary: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "platform": report.platform,
        "answers": _answers(answers),
        "os": _os(system),
        "hostname": _str(dig(system, "hostname")),
        "uptime": _str(dig(system, "uptime")),
        "uptime_seconds": _int(dig(system, "uptime_seconds")),
        "boot_time": _str(dig(system, "boot_time")),
        "timezone": _timezone(system),
        "hardware": _hardware(hardware),
        "disks": disks,
        "disk_full": None if disks is None else [
            {"mount": d["mount"], "used_percent": d["used_percent"], "free": d["free"]}
            for d in disks if d["used_percent"] is not None and d["used_percent"] >= DISK_FULL_PERCENT
        ],
        "tmpfs_full": _scratch(hardware, "tmpfs_full", "percent"),
        "inode_full": _scratch(hardware, "inode_full", "inodes_percent"),
        "storage": _storage(facts.get("storage")),
        "devices": _devices(facts.get("devices")),
        "network": _network(facts.get("network")),
        "netconfig": _netconfig(facts.get("netconfig")),
        "services": _services(facts.get("services"), report.platform),
        "software": _software(facts.get("software")),
        "updates": _updates(facts.get("updates")),
        "errors": _errors(facts.get("logs")),
        "kernel": None,
        "crashes": _crashes(facts.get("crashes")),
        "printers": _printers(facts.get("printers")),
        "clock": _clock(facts.get("clock")),
        "display": _display(facts.get("display")),
        "processes": _processes(facts.get("processes")),
        "attention": [],
        "collection": _collection(report, set(excluded)),
    }
    summary["kernel"] = _kernel(facts.get("kernel"), summary["crashes"])
    if summary["network"] is not None:
        summary["network"]["failures"] = _network_failures(summary["network"], summary["errors"])
    summary["attention"] = attention_lines(summary)
    return summary


def attention_lines(summary: Mapping[str, Any]) -> list[str]:
    """Return one line per thing an engineer should look at first, the gravest first.

    Events that stop work (OOM kills, crashes, a dirty shutdown, full disks,
    tmpfs or inodes) come before states that degrade it (stopped services,
    printers, clock), so a one-off OOM kill is never pushed out by repeated
    warnings in the first lines an engineer reads.
    """
    lines: list[str] = []
    kernel = summary.get("kernel") or {}
    for kill in (kernel.get("oom_kills") or [])[-3:]:
        lines.append(f"Out of memory: the kernel killed {kill.get('process') or '?'} (pid {kill.get('pid') or '?'})"
                     + (f" at {kill['time']}" if kill.get("time") else ""))
    extra_kills = (kernel.get("oom_kill_count") or 0) - min(3, len(kernel.get("oom_kills") or []))
    if extra_kills > 0:
        lines.append(f"... and {extra_kills} more OOM kill(s)")
    for crash in (kernel.get("segfaults") or [])[-3:]:
        where = f" in {crash['module']}" if crash.get("module") else ""
        title = f" — crash report: {crash['report']}" if crash.get("report") else ""
        lines.append(f"{crash.get('process') or '?'} (pid {crash.get('pid') or '?'}) crashed with "
                     f"{crash.get('signal') or 'a fatal signal'}{where}{title}")
    for panic in (kernel.get("kernel_panics") or [])[:2]:
        lines.append(f"Kernel panic {panic.get('time') or ''}: {panic.get('panic') or panic.get('name')}".replace("  ", " "))
    previous = kernel.get("previous_boot") or {}
    if previous.get("clean") is False:
        lines.append(f"The last shutdown was not clean: {previous.get('reason')}")
    if kernel.get("unexpected_shutdown_count"):
        lines.append(f"{kernel['unexpected_shutdown_count']} unexpected shutdown(s) in the System log")
    log = "the System log" if kernel.get("source") == "windows-system-log" else "the kernel log"
    if kernel.get("io_error_count"):
        devices = ", ".join(kernel.get("io_error_devices") or []) or "a disk"
        lines.append(f"{kernel['io_error_count']} disk I/O error(s) in {log} ({devices})")
    storage = summary.get("storage") or {}
    for disk in (storage.get("failing") or [])[:3]:
        lines.append(f"Disk {disk} fails its health check (SMART): back up its data now")
    for disk in summary.get("disk_full") or []:
        lines.append(f"Disk {disk['mount']} is {disk['used_percent']:g} % full")
    for mount in summary.get("tmpfs_full") or []:
        lines.append(f"tmpfs {mount['mount']} is {mount['used_percent']:g} % full")
    for mount in summary.get("inode_full") or []:
        lines.append(f"File system {mount['mount']} is out of inodes ({mount['used_percent']:g} % used)")
    services = summary.get("services") or {}
    failed = services.get("failed") or []
    if failed:
        lines.append(f"{len(failed)} failed service(s): {', '.join(failed[:5])}" + (" ..." if len(failed) > 5 else ""))
    if services.get("checked") is False:
        lines.append(f"Services were not checked: {services.get('note') or 'no service manager to ask'}")
    crashes = summary.get("crashes") or {}
    if crashes.get("count"):
        window = (summary.get("errors") or {}).get("window_hours") or "?"
        lines.append(f"{crashes['count']} crash(es) in the last {window:g} h" if isinstance(window, (int, float))
                     else f"{crashes['count']} recent crash(es)")
    network = summary.get("network") or {}
    for probe in network.get("reachability") or []:
        if probe.get("reachable") is False:
            lines.append(f"{probe.get('target')} is unreachable ({probe.get('problem') or 'no connection'})")
    for failure in (network.get("failures") or [])[:3]:
        lines.append(failure)
    netconfig = summary.get("netconfig") or {}
    if netconfig.get("connectivity") in ("none", "limited", "portal"):
        lines.append(f"NetworkManager reports {netconfig['connectivity']} connectivity")
    wifi = netconfig.get("wifi") or {}
    signal = wifi.get("signal_percent")
    if isinstance(signal, (int, float)) and signal < WEAK_SIGNAL_PERCENT:
        lines.append(f"Wi-Fi signal is weak ({signal:g} %) on {wifi.get('ssid') or 'the current network'}")
    for mount in (storage.get("fstab_missing") or [])[:3]:
        lines.append(f"fstab mounts {mount} from a device that is not attached (boot may stall)")
    for failure in (kernel.get("service_errors") or [])[:3]:
        lines.append(f"Service {failure['service']} {failure['problem']}"
                     + (f" ({failure['count']}×)" if failure.get("count", 1) > 1 else ""))
    if kernel.get("driver_error_count"):
        drivers = kernel.get("driver_error_drivers") or []
        lines.append(f"{kernel['driver_error_count']} driver error(s) in {log}"
                     + (f" ({', '.join(drivers[:5])})" if drivers else ""))
    for problem in ((summary.get("printers") or {}).get("problems") or [])[:3]:
        target = "Printing" if problem.get("printer") == "*" else f"Printer {problem.get('printer')}"
        lines.append(f"{target}: {problem.get('problem')}")
    for problem in ((summary.get("devices") or {}).get("problems") or [])[:3]:
        lines.append(f"Device {problem.get('device')}: {problem.get('problem')}")
    updates = summary.get("updates") or {}
    if updates.get("broken"):
        lines.append(f"Broken package(s), half installed: {', '.join(updates['broken'][:5])}")
    for failed in (updates.get("failed") or [])[:2]:
        lines.append(f"Update failed: {failed}")
    display = summary.get("display") or {}
    if display.get("xorg_fatal"):
        lines.append(f"The X server failed to start: {display['xorg_fatal']}")
    for adapter in (display.get("adapter_problems") or [])[:2]:
        lines.append(f"Graphics adapter {adapter} reports a problem")
    login = display.get("login") or {}
    if login.get("unclean_shutdown_count"):
        latest = (login.get("unclean_shutdowns") or [{}])[-1]
        when = latest.get("boot") or latest.get("next_boot")
        lines.append(f"{login['unclean_shutdown_count']} shutdown(s) without an orderly shutdown in the login records"
                     + (f" (latest: the boot of {when})" if when else ""))
    clock = summary.get("clock") or {}
    if clock.get("synchronized") is False:
        lines.append("The clock is not synchronised" + (" (NTP is off)" if clock.get("ntp_enabled") is False else "")
                     + ": sign-ins and certificates may fail")
    stopped = services.get("stopped_enabled") or []
    if stopped:
        lines.append(f"{len(stopped)} service(s) set to start but not running: {', '.join(stopped[:5])}"
                     + (" ..." if len(stopped) > 5 else ""))
    memory = (summary.get("hardware") or {}).get("memory_used_percent")
    if isinstance(memory, (int, float)) and memory >= 90:
        lines.append(f"Memory is {memory:g} % used")
    zombies = (summary.get("processes") or {}).get("zombies")
    if zombies:
        lines.append(f"{zombies} zombie process(es)")
    collection = summary.get("collection") or {}
    broken = [name for name, status in (collection.get("collectors") or {}).items()
              if status in (CollectorStatus.ERROR.value, CollectorStatus.TIMEOUT.value)]
    if broken:
        lines.append(f"Collection incomplete: {', '.join(broken)} did not finish")
    return lines


# -- sections ----------------------------------------------------------------------


def _facts_by_collector(report: CollectionReport, excluded: set[str]) -> dict[str, dict[str, Any]]:
    """Map collector name (and category) to its facts, leaving out failed, skipped and excluded ones."""
    found: dict[str, dict[str, Any]] = {}
    for result in report.results:
        if result.category in excluded or result.name in excluded:
            continue
        if result.status is not CollectorStatus.OK or not isinstance(result.facts, dict) or not result.facts:
            continue
        found.setdefault(result.name, result.facts)
        found.setdefault(result.category, result.facts)
    return found


def _answers(answers: Mapping[str, Any] | None) -> dict[str, str | None] | None:
    if not isinstance(answers, Mapping):
        return None
    return {key: _str(answers.get(key)) for key in ANSWER_KEYS}


def _scratch(hardware: dict | None, key: str, percent_key: str) -> list[dict[str, Any]] | None:
    """The full tmpfs mounts or inode-starved file systems the hardware collector flagged (over 95 %)."""
    if hardware is None or not isinstance(hardware.get(key), list):
        return None
    found = []
    for entry in hardware[key]:
        if not isinstance(entry, dict) or not _str(entry.get("mountpoint")) or _num(entry.get(percent_key)) is None:
            continue
        if entry[percent_key] < SCRATCH_FULL_PERCENT:
            continue
        found.append({"mount": entry["mountpoint"], "used_percent": entry[percent_key],
                      "free": _int(entry.get("inodes_free" if percent_key == "inodes_percent" else "free"))})
    return found


def _kernel(kernel: dict | None, crashes: dict | None) -> dict[str, Any] | None:
    """OOM kills, segfaults (signal names, crash-report titles), I/O and driver errors, panics, the last shutdown."""
    if kernel is None:
        return None
    reports = [c for c in _list((crashes or {}).get("recent")) if isinstance(c, dict)]

    def report_for(process: str | None, pid: int | None) -> str | None:
        """The crash report of a crashed process: same pid, else same program. The kernel names a process
        by its ``comm``, cut to 15 characters and taken from the name it was started by (``python3`` for
        /usr/bin/python3.12), so a program whose name goes on past it with a version matches too."""
        if pid is not None:
            for crash in reports:
                if crash.get("pid") == pid and (crash.get("title") or crash.get("report")):
                    return crash.get("title") or crash.get("report")
        for crash in reports:
            program = (crash.get("program") or "").replace("\\", "/").rsplit("/", 1)[-1]
            if process and program and (program == process or (len(process) >= 15 and program.startswith(process))
                                        or re.fullmatch(re.escape(process) + r"[\d.]*(?:\.exe)?", program)):
                if crash.get("title") or crash.get("report"):
                    return crash.get("title") or crash.get("report")
        return None

    kills = [{"time": _str(k.get("time")), "process": _str(k.get("process")), "pid": _int(k.get("pid"))}
             for k in _list(kernel.get("oom_kills")) if isinstance(k, dict)]
    segfaults = []
    for crash in _list(kernel.get("segfaults")):
        if not isinstance(crash, dict):
            continue
        sig = crash.get("signal")
        segfaults.append({"time": _str(crash.get("time")), "process": _str(crash.get("process")),
                          "pid": _int(crash.get("pid")),
                          "signal": signal_name(sig) if isinstance(sig, int) else _str(sig),
                          "module": _str(crash.get("module")),
                          "report": report_for(_str(crash.get("process")), _int(crash.get("pid")))})
    previous = _dict(kernel.get("previous_boot"))
    devices = _dict(kernel.get("io_error_devices")) or {}
    panics = [{"time": _str(p.get("time")), "name": _str(p.get("name")), "panic": _str(p.get("panic"))}
              for p in _list(kernel.get("kernel_panics")) if isinstance(p, dict)]
    service_errors: dict[tuple[str, str], dict[str, Any]] = {}
    for failure in _list(kernel.get("service_errors")):
        if isinstance(failure, dict) and _str(failure.get("service")):
            key = (failure["service"], _str(failure.get("problem")) or "failed")
            service_errors.setdefault(key, {"service": key[0], "problem": key[1], "count": 0})["count"] += 1
    return {
        "source": _str(kernel.get("source")),
        "oom_kills": kills,
        "oom_kill_count": _int(kernel.get("oom_kill_count")) or len(kills),
        "segfaults": segfaults,
        "segfault_count": _int(kernel.get("segfault_count")) or len(segfaults),
        "io_error_count": _int(kernel.get("io_error_count")) or 0,
        "io_error_devices": [str(d) for d in devices],
        "driver_error_count": _int(kernel.get("driver_error_count")) or 0,
        "driver_error_drivers": [str(d) for d in _dict(kernel.get("driver_error_sources")) or {} if d],
        "unexpected_shutdown_count": _int(kernel.get("unexpected_shutdown_count")) or 0,
        "service_errors": list(service_errors.values()),
        "kernel_panics": panics,
        "previous_boot": None if previous is None else {
            "clean": previous.get("clean") if isinstance(previous.get("clean"), bool) else None,
            "reason": _str(previous.get("reason")),
            "error_count": _int(previous.get("error_count")),
        },
        "note": _str(kernel.get("note")),
    }


def _storage(storage: dict | None) -> dict[str, Any] | None:
    if storage is None:
        return None
    smart = [s for s in _list(storage.get("smart")) if isinstance(s, dict)]
    return {
        "failing": [str(d) for d in _list(storage.get("failing")) if d],
        "smart_checked": [str(s.get("disk")) for s in smart if s.get("health")],
        "encrypted": [str(d) for d in _list(storage.get("encrypted")) if d],
        "fstab_missing": [m["mountpoint"] for m in _list(storage.get("fstab_missing"))
                          if isinstance(m, dict) and _str(m.get("mountpoint"))],
    }


def _devices(devices: dict | None) -> dict[str, Any] | None:
    if devices is None:
        return None
    identity = _dict(devices.get("identity")) or {}
    bios = _dict(identity.get("bios")) or {}
    return {
        "manufacturer": _str(identity.get("manufacturer")),
        "product": _str(identity.get("product")),
        "serial": _str(identity.get("serial")),
        "bios_version": _str(bios.get("version")),
        "bios_date": _str(bios.get("date")),
        "usb_count": len(devices["usb"]) if isinstance(devices.get("usb"), list) else None,
        "problems": [{"device": _str(p.get("device")), "problem": _str(p.get("problem"))}
                     for p in _list(devices.get("problems")) if isinstance(p, dict)],
    }


def _netconfig(netconfig: dict | None) -> dict[str, Any] | None:
    if netconfig is None:
        return None
    manager = _dict(netconfig.get("networkmanager")) or {}
    wifi = _dict(netconfig.get("wifi"))
    firewall = _dict(netconfig.get("firewall"))
    return {
        "state": _str(manager.get("state")),
        "connectivity": _str(manager.get("connectivity")),
        "wifi": None if wifi is None else {"ssid": _str(wifi.get("ssid")), "signal_percent": _num(wifi.get("signal_percent"))},
        "firewall": None if firewall is None else {
            "backend": _str(firewall.get("backend")),
            "enabled": firewall.get("enabled") if isinstance(firewall.get("enabled"), bool) else None,
            "rule_count": _int(firewall.get("rule_count")), "input_policy": _str(firewall.get("input_policy"))},
        "hosts_entries": len(_list(netconfig.get("hosts"))),
    }


def _updates(updates: dict | None) -> dict[str, Any] | None:
    if updates is None:
        return None
    recent = [r for r in _list(updates.get("recent")) if isinstance(r, dict)]
    failed = []
    for entry in _list(updates.get("failed")):
        if isinstance(entry, dict):
            label = _str(entry.get("title")) or _str(entry.get("command")) or "?"
            detail = _str(entry.get("hresult")) or _str(entry.get("error"))
            failed.append(f"{label}" + (f" ({detail})" if detail else "")
                          + (f" at {entry['time']}" if _str(entry.get("time")) else ""))
    return {
        "manager": _str(updates.get("manager")),
        "last": None if not recent else {"time": _str(recent[0].get("time")),
                                         "what": _str(recent[0].get("title") or recent[0].get("command")
                                                      or recent[0].get("action"))},
        "failed": failed,
        "held": [str(h) for h in _list(updates.get("held")) if h],
        "broken": [str(b) for b in _list(updates.get("broken")) if b],
    }


def _printers(printers: dict | None) -> dict[str, Any] | None:
    if printers is None:
        return None
    queues = [{"name": _str(p.get("name")), "state": _str(p.get("state") or p.get("status")),
               "accepting": p.get("accepting") if isinstance(p.get("accepting"), bool) else None}
              for p in _list(printers.get("printers")) if isinstance(p, dict)]
    problems = [{"printer": _str(p.get("printer")), "problem": _str(p.get("problem"))}
                for p in _list(printers.get("problems")) if isinstance(p, dict) and _str(p.get("problem"))]
    errors = [e for e in _list(printers.get("cups_errors")) if isinstance(e, dict)]
    return {
        "system": _str(printers.get("system")),
        "service_running": printers.get("scheduler_running") if isinstance(printers.get("scheduler_running"), bool)
        else None,
        "default": _str(printers.get("default")),
        "queues": queues,
        "problems": problems,
        "recent_errors": [_str(e.get("message")) for e in errors[-3:] if _str(e.get("message"))],
        "error_count": _int(printers.get("cups_error_count")) or 0,
        "note": _str(printers.get("note")),
    }


def _clock(clock: dict | None) -> dict[str, Any] | None:
    if clock is None:
        return None
    sync = _dict(clock.get("sync")) or {}
    return {
        "source": _str(sync.get("source")),
        "synchronized": sync.get("synchronized") if isinstance(sync.get("synchronized"), bool) else None,
        "ntp_enabled": sync.get("ntp_enabled") if isinstance(sync.get("ntp_enabled"), bool) else None,
        "server": _str(sync.get("server")),
        "sessions": _int(clock.get("session_count")),
    }


#: DHCP failures as dhclient, dhcpcd, NetworkManager, systemd-networkd and the Windows DHCP client
#: (events 1001, 1002) word them; the lease is not renewed, refused or never offered.
_DHCP_FAILURE = rx(r"no DHCPOFFERS|DHCPNA?C?K\b|not assigned an address|"
                           r"(?:dhcp|lease)\S*\b.*?(?:timed? ?out|fail|denied|expired|no lease|not assigned|"
                           r"could not|unable to)|(?:could not|failed to) (?:acquire|get|obtain) \S*\s?(?:dhcp|lease)|"
                           r"IPv4LL|\bAPIPA\b|autoconfiguration (?:address|IP)",
                           re.IGNORECASE)
#: DNS failures as systemd-resolved, glibc, apt, curl, NetworkManager and the Windows DNS client (1014) word them.
_DNS_FAILURE = rx(r"temporary failure (?:in name resolution|resolving)|\bSERVFAIL\b|could(?: not|n't) "
                          r"resolve|name or service not known|no address associated with hostname|"
                          r"name resolution\b.*?(?:timed? ?out|fail)|"
                          r"(?:\bdns|resolv)\S*\b.*?(?:timed? ?out|fail|refused|unreachable|no (?:servers?|response)|"
                          r"not respond)|DNS-Client|no DNS servers? (?:known|configured|available)", re.IGNORECASE)
#: Lines that look like a DNS or DHCP failure and are not: NetworkManager announcing how long it will wait,
#: systemd-resolved falling back to plain UDP, dhcpcd finding no IPv6 router on an IPv4 network.
_NOT_A_NETWORK_FAILURE = rx(r"beginning transaction|\(timeout in \S+ seconds\)|degraded feature set|"
                                    r"no IPv6 Routers available", re.IGNORECASE)


def _network_failures(network: dict[str, Any], errors: dict[str, Any] | None) -> list[str]:
    """Name DNS and DHCP failures seen in the probes and the top log errors, one line each."""
    failures = []
    for probe in network.get("reachability") or []:
        if probe.get("dns_ok") is False:
            failures.append(f"DNS failure: {probe.get('target')} could not be resolved")
    for entry in (errors or {}).get("top") or []:
        message = str(entry.get("message") or "")
        if _NOT_A_NETWORK_FAILURE.search(message):
            continue
        kind = "DHCP" if _DHCP_FAILURE.search(message) else "DNS" if _DNS_FAILURE.search(message) else None
        if kind:
            count = entry.get("count") or 0
            failures.append(f"{kind} failure in the log{f' ({count}×)' if count > 1 else ''}: {message[:160]}")
    return failures


def _os(system: dict | None) -> dict[str, Any] | None:
    if system is None:
        return None
    os_facts = _dict(system.get("os")) or {}
    return {
        "family": _str(os_facts.get("family")),
        "name": _str(os_facts.get("name")),
        "version": _str(os_facts.get("version")),
        "build": _str(os_facts.get("build")),
        "pretty_name": _str(os_facts.get("pretty_name")),
        "kernel": _str(dig(system, "kernel", "release")),
        "architecture": _str(system.get("architecture")),
    }


def _timezone(system: dict | None) -> dict[str, Any] | None:
    zone = _dict(dig(system, "timezone"))
    if zone is None:
        return None
    return {"name": _str(zone.get("name")), "utc_offset": _str(zone.get("utc_offset"))}


def _hardware(hardware: dict | None) -> dict[str, Any] | None:
    if hardware is None:
        return None
    cpu = _dict(hardware.get("cpu")) or {}
    memory = _dict(hardware.get("memory")) or {}
    battery = _dict(hardware.get("battery"))
    return {
        "manufacturer": _str(hardware.get("manufacturer")),
        "model": _str(hardware.get("model")),
        "cpu_model": _str(cpu.get("model")),
        "cores": _int(cpu.get("logical_cores")),
        "physical_cores": _int(cpu.get("physical_cores")),
        "load_average": [x for x in _list(cpu.get("load_average")) if _num(x) is not None] or None,
        "memory_total": _int(memory.get("total")),
        "memory_available": _int(memory.get("available")),
        "memory_used_percent": _num(memory.get("percent")),
        "swap_total": _int(memory.get("swap_total")),
        "swap_used_percent": _num(memory.get("swap_percent")),
        "battery": None if battery is None else {
            "percent": _num(battery.get("percent")),
            "plugged": battery.get("plugged") if isinstance(battery.get("plugged"), bool) else None,
            "minutes_left": _int(battery.get("minutes_left")),
        },
    }


def _disks(hardware: dict | None) -> list[dict[str, Any]] | None:
    if hardware is None or not isinstance(hardware.get("disks"), list):
        return None
    disks = []
    for disk in hardware["disks"]:
        if not isinstance(disk, dict) or not _str(disk.get("mountpoint")):
            continue
        disks.append({
            "mount": disk["mountpoint"],
            "fs": _str(disk.get("fstype")),
            "size": _int(disk.get("total")),
            "free": _int(disk.get("free")),
            "used_percent": _num(disk.get("percent")),
        })
    return disks


def _network(network: dict | None) -> dict[str, Any] | None:
    if network is None:
        return None
    routes = [r for r in _list(network.get("default_routes")) if isinstance(r, dict)]
    dns = _dict(network.get("dns")) or {}
    servers: list[str] = []
    for key in ("resolved_servers", "nameservers"):
        for server in _list(dns.get(key)):
            if isinstance(server, str) and server not in servers:
                servers.append(server)
    reachability = []
    for probe in _list(network.get("reachability")):
        if not isinstance(probe, dict):
            continue
        dns_probe, tcp_probe = _dict(probe.get("dns")) or {}, _dict(probe.get("tcp")) or {}
        problem = _str(probe.get("error")) or (None if tcp_probe.get("status") in (None, "ok") else
                                              f"tcp {tcp_probe.get('status')}") \
            or (None if dns_probe.get("status") in (None, "ok") else f"dns {dns_probe.get('status')}")
        reachability.append({
            "target": _str(probe.get("target")),
            "role": _str(probe.get("role")),
            "reachable": probe.get("reachable") if isinstance(probe.get("reachable"), bool) else None,
            "dns_ok": dns_probe.get("status") == "ok" if dns_probe else None,
            "tcp_ok": tcp_probe.get("status") == "ok" if tcp_probe else None,
            "dns_ms": _num(dns_probe.get("ms")),
            "latency_ms": _num(tcp_probe.get("ms")) if tcp_probe.get("status") == "ok" else None,
            "problem": problem,
        })
    return {
        "default_route": {"gateway": _str(routes[0].get("gateway")), "interface": _str(routes[0].get("interface"))}
        if routes else None,
        "dns": servers,
        "dns_search": [s for s in _list(dns.get("search")) if isinstance(s, str)],
        "proxies": _proxies(_dict(network.get("proxy")) or {}),
        "reachability": reachability,
        "server_reachable": network.get("server_reachable") if isinstance(network.get("server_reachable"), bool)
        else None,
    }


def _proxies(proxy: dict[str, Any]) -> list[dict[str, str]]:
    """Flatten the platform-specific proxy facts into ``[{source, name, value}]``, configured ones only."""
    found: list[dict[str, str]] = []

    def add(source: str, name: str, value: Any) -> None:
        if isinstance(value, str) and value.strip():
            found.append({"source": source, "name": name, "value": value.strip()})

    for source in ("environment", "etc_environment"):
        for name, value in (_dict(proxy.get(source)) or {}).items():
            add(source, str(name), value)
    for line in _list(proxy.get("apt")):
        add("apt", "Acquire::Proxy", line)
    user = _dict(proxy.get("user")) or {}
    if user.get("enabled"):
        add("windows-user", "server", user.get("server"))
        add("windows-user", "bypass", user.get("bypass"))
    add("windows-user", "pac_url", user.get("pac_url"))
    winhttp = _dict(proxy.get("winhttp")) or {}
    if winhttp.get("direct") is False:
        add("winhttp", "server", winhttp.get("server"))
        add("winhttp", "bypass", winhttp.get("bypass"))
    system = _dict(proxy.get("system")) or {}
    for kind, value in (_dict(system.get("proxies")) or {}).items():
        add("macos-system", str(kind), value)
    add("macos-system", "pac_url", system.get("pac_url"))
    return found


def _services(services: dict | None, platform: str) -> dict[str, Any] | None:
    if services is None:
        return None
    if "automatic_stopped" in services:  # Windows: the SCM has no "failed" state, only stopped automatic services
        stopped = _names(services.get("automatic_stopped"), "name")
        return {"manager": "windows-scm", "count": _int(services.get("service_count")),
                "failed": [], "stopped_enabled": stopped, "note": None, "checked": stopped is not None}
    if "nonzero_status" in services:  # macOS: launchd jobs whose last exit status was not zero
        failed = _names(services.get("nonzero_status"), "label")
        return {"manager": "launchd", "count": _int(services.get("service_count")),
                "failed": failed, "stopped_enabled": None, "note": None, "checked": failed is not None}
    manager = "systemd" if services.get("systemd") else _str(services.get("init_system"))
    failed = _names(services.get("failed"), "unit")
    return {
        "manager": manager,
        "count": _int(services.get("service_count")),
        "failed": failed,
        "stopped_enabled": _names(services.get("enabled_not_running"), "unit"),
        "note": _str(services.get("note")),
        # Without systemd nothing was asked: say so instead of an empty list that reads as "all fine".
        "checked": services["checked"] if isinstance(services.get("checked"), bool) else failed is not None,
    }


def _software(software: dict | None) -> dict[str, Any] | None:
    if software is None:
        return None
    apps = {}
    for name, info in (_dict(software.get("apps")) or {}).items():
        apps[str(name)] = _str(info.get("version")) if isinstance(info, dict) else _str(info)
    count = _int(software.get("package_count"))
    if count is None and isinstance(software.get("packages"), dict):
        count = len(software["packages"])
    return {
        "manager": _str(software.get("package_manager")),
        "package_count": count,
        "extra_counts": {key[: -len("_count")]: value for key, value in software.items()
                         if key.endswith("_count") and key != "package_count" and isinstance(value, int)},
        "apps": apps,
    }


_SEVERE_ERROR = rx(r"out of memory|killed process|oom[-_ ]kill|segfault|general protection|kernel panic|"
                           r"I/O error|fatal signal|core dumped", re.IGNORECASE)


def _errors(logs: dict | None) -> dict[str, Any] | None:
    if logs is None:
        return None
    top = []
    for entry in _list(logs.get("top_errors")):
        if isinstance(entry, dict) and _str(entry.get("message")):
            # One real (redacted) line beside the shape: the shape groups, the example shows what happened.
            top.append({"message": entry["message"], "count": _int(entry.get("count")) or 0,
                        "example": _str(entry.get("example")), "source": _str(entry.get("source"))})
    # A one-off OOM kill or crash matters more than a warning repeated a thousand times: it goes first.
    top.sort(key=lambda entry: 0 if _SEVERE_ERROR.search(entry["message"]) else 1)
    return {
        "window_hours": _num(logs.get("since_hours")),
        "source": _str(logs.get("source")),
        "distinct": len(top),
        "top": top[:TOP_ERRORS],
    }


def _crashes(crashes: dict | None) -> dict[str, Any] | None:
    if crashes is None:
        return None
    recent: list[dict[str, Any]] = []
    copied = [entry for entry in _list(crashes.get("copied_reports")) if isinstance(entry, dict)]
    for entry in copied:
        recent.append({
            "time": _str(entry.get("time") or entry.get("date") or entry.get("modified")),
            "program": _str(entry.get("application") or entry.get("executable") or entry.get("name")),
            "detail": _signal_text(entry.get("signal")) or _str(
                entry.get("exception") or entry.get("exception_code") or entry.get("fault_module")
                or entry.get("event_type") or entry.get("problem_type")),
            "title": _str(entry.get("title")),
            "report": _str(entry.get("staged")),
            "pid": _int(entry.get("pid")),
        })
    for entry in _list(crashes.get("coredumps")):
        if isinstance(entry, dict):
            recent.append({"time": _str(entry.get("time")), "program": _str(entry.get("executable")),
                           "detail": _signal_text(entry.get("signal")), "title": None, "report": None,
                           "pid": _int(entry.get("pid"))})
    # Recent reports and dumps that were listed but not copied (over the copy limit, or dumps never copied).
    copied_names = {entry.get("name") for entry in copied}
    for key, detail in (("crash_reports", "crash report"), ("core_files", "core file"), ("crash_dumps", "crash dump"),
                        ("wer_reports", "error report"), ("diagnostic_reports", "diagnostic report")):
        for entry in _list(crashes.get(key)):
            if isinstance(entry, dict) and entry.get("recent") is True and entry.get("name") not in copied_names:
                recent.append({"time": _str(entry.get("modified")), "program": _str(entry.get("name")),
                               "detail": detail, "title": None, "report": None, "pid": None})
    recent.sort(key=lambda r: r["time"] or "", reverse=True)
    return {"count": _int(crashes.get("recent_count")) or 0, "recent": recent[:RECENT_CRASHES]}


def _signal_text(value: Any) -> str | None:
    """A crash's signal by name (``SIGSEGV``, not 11), whether it came as a number or a numeric string."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        return signal_name(value) or f"signal {value}"
    return _str(value)


def _display(display: dict | None) -> dict[str, Any] | None:
    """The graphical session, its log problems, the monitors and unclean shutdowns from the login records."""
    if display is None:
        return None
    xorg = _dict(display.get("xorg")) or {}
    monitors = display.get("monitors")
    login = _dict(display.get("login"))
    return {
        "session": _str((_dict(display.get("session")) or {}).get("type")),
        "xorg_errors": _int(xorg.get("error_count")),
        "xorg_fatal": _str(xorg.get("fatal")),
        "display_manager_warnings": _int((_dict(display.get("display_manager")) or {}).get("count")),
        "compositor_warnings": _int((_dict(display.get("compositor")) or {}).get("count")),
        "adapter_problems": [str(a) for a in _list(display.get("adapter_problems")) if a],
        # None: no display to ask (console, SSH); a list: what the display server reported.
        "monitors": None if not isinstance(monitors, list) else [
            {"name": _str(m.get("output") or m.get("name")), "connected": m.get("connected") is not False,
             "mode": _str(m.get("mode"))} for m in monitors if isinstance(m, dict) and m.get("connected") is not False],
        "login": None if login is None else {
            "unclean_shutdown_count": _int(login.get("unclean_shutdown_count")) or 0,
            "unclean_shutdowns": [u for u in _list(login.get("unclean_shutdowns")) if isinstance(u, dict)][-3:],
            "crashed_sessions": _int(login.get("crashed_sessions")) or 0,
        },
    }


def _processes(processes: dict | None) -> dict[str, Any] | None:
    if processes is None:
        return None

    def top(key: str) -> list[dict[str, Any]]:
        return [{"pid": _int(p.get("pid")), "name": _str(p.get("name")), "cpu_percent": _num(p.get("cpu_percent")),
                 "memory_percent": _num(p.get("memory_percent")), "rss": _int(p.get("rss"))}
                for p in _list(processes.get(key)) if isinstance(p, dict) and not _idle(p, key)][:TOP_PROCESSES]

    zombies = processes.get("zombies")
    return {
        "count": _int(processes.get("count")),
        "cpu_percent_total": _num(processes.get("cpu_percent_total")),
        "top_cpu": top("top_cpu"),
        "top_memory": top("top_memory"),
        "zombies": len(zombies) if isinstance(zombies, list) else None,
    }


def _collection(report: CollectionReport, excluded: set[str]) -> dict[str, Any]:
    collectors = {}
    items: Counter[str] = Counter()
    for result in report.results:
        if result.category in excluded or result.name in excluded:
            collectors[result.name] = "excluded"
            continue
        collectors[result.name] = result.status.value
        items.update(item.status.value for item in result.items)
    return {
        "started_at": report.started_at.isoformat(timespec="seconds"),
        "duration": round(report.duration, 2),
        "deadline": report.deadline,
        "collectors": collectors,
        "items_by_status": dict(sorted(items.items())),
        "excluded": sorted(excluded),
    }


def _idle(process: dict, key: str) -> bool:
    """True for a row that only pads the top-CPU list: an idle kernel thread, or a process using no CPU."""
    if key != "top_cpu":
        return False
    name = process.get("name") if isinstance(process.get("name"), str) else ""
    cpu = _num(process.get("cpu_percent"))
    kernel_thread = "cmdline" in process and process.get("cmdline") is None and process.get("rss") == 0
    return name in _IDLE_PROCESSES or cpu == 0 or (kernel_thread and not cpu)


# -- defensive readers ---------------------------------------------------------------


def dig(data: Any, *keys: str) -> Any:
    """Follow ``keys`` into nested dicts; None as soon as a level is missing or not a dict."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict | None:
    return value if isinstance(value, dict) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _num(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _names(rows: Any, key: str) -> list[str] | None:
    """Return the ``key`` of every dict in ``rows`` (None when the list itself is missing)."""
    if not isinstance(rows, list):
        return None
    return [row[key] for row in rows if isinstance(row, dict) and isinstance(row.get(key), str)]
