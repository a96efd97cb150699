"""How the PC reaches the network: interfaces, default route, DNS, proxies, and whether the
Helpline server and admin-chosen hosts answer (DNS time, TCP connect latency).

Probes are bounded (a few seconds each, run in parallel, at most
:data:`MAX_TARGETS`) and only ever go to the hosts the options name.
"""

from __future__ import annotations

import errno
import glob
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psutil

from ..context import CollectContext
from ..model import ItemKind
from .base import ALL_PLATFORMS, Collector, as_list, parse_colon_pairs, powershell, read_json, read_text, systemd_booted

MAX_TARGETS = 16
DNS_TIMEOUT = 3.0
CONNECT_TIMEOUT = 3.0
PROXY_VARIABLES = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy")

WINDOWS_NETWORK_SCRIPT = (
    "[pscustomobject]@{"
    "DefaultRoutes=@(Get-NetRoute -DestinationPrefix '0.0.0.0/0','::/0' -ErrorAction SilentlyContinue | "
    "Select-Object InterfaceAlias,ifIndex,NextHop,RouteMetric,AddressFamily); "
    "DnsServers=@(Get-DnsClientServerAddress -ErrorAction SilentlyContinue | Where-Object {$_.ServerAddresses} | "
    "Select-Object InterfaceAlias,AddressFamily,ServerAddresses); "
    "InternetSettings=(Get-ItemProperty 'HKCU:\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings' "
    "-ErrorAction SilentlyContinue | Select-Object ProxyEnable,ProxyServer,ProxyOverride,AutoConfigURL)"
    "} | ConvertTo-Json -Depth 4"
)


@dataclass(frozen=True)
class Target:
    """A host and TCP port to probe, with the text it came from."""

    label: str
    host: str
    port: int
    role: str  # "server" or "host"


def parse_target(text: str, default_port: int = 443, role: str = "host") -> Target:
    """Parse ``host``, ``host:port`` or ``[v6]:port``; raise ValueError for anything else."""
    text = text.strip()
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?", text)
    if match:
        host, port = match.group(1), match.group(2)
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1:  # a bare IPv6 address
        host, port = text, None
    else:
        host, port = text, None
    if not host or not re.fullmatch(r"[A-Za-z0-9._:-]+", host):
        raise ValueError(f"not a host name or address: {text!r}")
    number = int(port) if port else default_port
    if not 0 < number < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return Target(text, host, number, role)


def server_target(url: str) -> Target:
    """Return the host and port a Helpline server URL points at (443 for https, 80 for http)."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if not parts.hostname:
        raise ValueError(f"no host in server URL {url!r}")
    default = 80 if parts.scheme == "http" else 443
    return Target(url, parts.hostname, parts.port or default, "server")


def probe(target: Target, dns_timeout: float = DNS_TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
    """Resolve ``target`` and open a TCP connection to it; report times in milliseconds, never raise."""
    result: dict[str, Any] = {"target": target.label, "host": target.host, "port": target.port, "role": target.role}
    box: dict[str, Any] = {}

    def resolve() -> None:
        try:
            box["infos"] = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            box["error"] = str(exc)

    started = time.monotonic()
    resolver = threading.Thread(target=resolve, name=f"dns:{target.host}", daemon=True)
    resolver.start()
    resolver.join(dns_timeout)
    dns_ms = round((time.monotonic() - started) * 1000, 1)
    if resolver.is_alive():
        result["dns"] = {"status": "timeout", "ms": dns_ms, "addresses": [], "error": f"no answer in {dns_timeout} s"}
    elif "error" in box:
        result["dns"] = {"status": "failed", "ms": dns_ms, "addresses": [], "error": box["error"]}
    else:
        addresses = list(dict.fromkeys(info[4][0] for info in box["infos"]))
        result["dns"] = {"status": "ok", "ms": dns_ms, "addresses": addresses, "error": None}
    if result["dns"]["status"] != "ok":
        result["tcp"] = {"status": "skipped", "ms": None, "address": None, "error": "name did not resolve"}
        result["reachable"] = False
        return result

    tcp: dict[str, Any] = {}
    for family, _, _, _, sockaddr in box["infos"][:2]:
        started = time.monotonic()
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(connect_timeout)
                sock.connect(sockaddr)
            tcp = {"status": "ok", "ms": round((time.monotonic() - started) * 1000, 1),
                   "address": sockaddr[0], "error": None}
            break
        except OSError as exc:
            tcp = {"status": _connect_failure(exc), "ms": round((time.monotonic() - started) * 1000, 1),
                   "address": sockaddr[0], "error": exc.strerror or str(exc)}
    result["tcp"] = tcp
    result["reachable"] = tcp.get("status") == "ok"
    return result


def probe_all(targets: list[Target], budget: float) -> list[dict[str, Any]]:
    """Probe every target in parallel and return within ``budget`` seconds; late ones are ``timeout``."""
    results: list[dict[str, Any] | None] = [None] * len(targets)
    per_step = max(0.2, min(DNS_TIMEOUT, budget / 2))

    def run(index: int, target: Target) -> None:
        results[index] = probe(target, dns_timeout=per_step, connect_timeout=per_step)

    workers = [threading.Thread(target=run, args=(i, t), name=f"probe:{t.label}", daemon=True)
               for i, t in enumerate(targets)]
    for worker in workers:
        worker.start()
    until = time.monotonic() + budget
    for worker in workers:
        worker.join(max(0.0, until - time.monotonic()))
    return [
        result if result is not None else {
            "target": target.label, "host": target.host, "port": target.port, "role": target.role,
            "dns": None, "tcp": None, "reachable": False, "error": f"no result within {budget:.1f} s",
        }
        for target, result in zip(targets, results)
    ]


def _connect_failure(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable"
    return "error"


class NetworkCollector(Collector):
    """Interfaces, route, DNS and proxies per platform, plus loopback-safe reachability probes."""

    name = "network"
    category = "network"
    description = ("Interfaces and addresses, default route, DNS servers, proxy settings, and reachability "
                   "of the Helpline server and admin-chosen hosts.")
    platforms = ALL_PLATFORMS
    timeout = 10.0

    def collect(self, ctx: CollectContext) -> dict[str, Any]:
        facts = {"interfaces": interfaces(), **super().collect(ctx)}
        facts["reachability"] = self._reachability(ctx)
        server = [entry for entry in facts["reachability"] if entry.get("role") == "server"]
        facts["server_reachable"] = server[0]["reachable"] if server else None
        return facts

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        ctx.run("network/ip-addr.json", ("ip", "-j", "addr"), timeout=5)
        routes = read_json(ctx, ctx.run("network/ip-route.json", ("ip", "-j", "route"), timeout=5)) or []
        resolv = ctx.copy_file("network/resolv.conf", "/etc/resolv.conf", 64 * 1024)
        dns = parse_resolv_conf(read_text(ctx, resolv) or "")
        if ctx.which("resolvectl") and systemd_booted():
            status = read_text(ctx, ctx.run("network/resolvectl-status.txt", ("resolvectl", "status"), timeout=5))
            dns["resolved_servers"] = parse_resolvectl(status or "")
        etc_env = ctx.copy_file("network/etc-environment.txt", "/etc/environment", 64 * 1024)
        apt_proxies = []
        for path in sorted(glob.glob("/etc/apt/apt.conf.d/*")) + ["/etc/apt/apt.conf"]:
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    apt_proxies += [line.strip() for line in handle
                                    if re.match(r"\s*Acquire::\w+::Proxy", line, re.IGNORECASE)]
            except OSError:
                continue
        return {
            "default_routes": [
                {"gateway": r.get("gateway"), "interface": r.get("dev"), "metric": r.get("metric")}
                for r in as_list(routes) if isinstance(r, dict) and r.get("dst") == "default"
            ],
            "dns": dns,
            "proxy": {
                "environment": _env_proxies(ctx),
                "etc_environment": {k: v for k, v in _parse_env_file(read_text(ctx, etc_env) or "").items()
                                    if k.lower() in PROXY_VARIABLES},
                "apt": apt_proxies,
            },
        }

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        data = read_json(ctx, ctx.run("network/windows-network.json", powershell(WINDOWS_NETWORK_SCRIPT),
                                      timeout=8)) or {}
        winhttp = read_text(ctx, ctx.run("network/winhttp-proxy.txt", ("netsh", "winhttp", "show", "proxy"),
                                         timeout=5)) or ""
        ctx.run("network/ipconfig.txt", ("ipconfig", "/all"), timeout=5)
        servers = []
        for entry in as_list(data.get("DnsServers")):
            servers += [s for s in as_list(entry.get("ServerAddresses")) if s not in servers]
        settings = data.get("InternetSettings") or {}
        return {
            "default_routes": [
                {"gateway": r.get("NextHop"), "interface": r.get("InterfaceAlias"), "metric": r.get("RouteMetric")}
                for r in as_list(data.get("DefaultRoutes"))
            ],
            "dns": {"nameservers": servers, "per_interface": {
                e.get("InterfaceAlias"): as_list(e.get("ServerAddresses")) for e in as_list(data.get("DnsServers"))}},
            "proxy": {
                "environment": _env_proxies(ctx),
                "user": {
                    "enabled": bool(settings.get("ProxyEnable")),
                    "server": settings.get("ProxyServer"),
                    "bypass": settings.get("ProxyOverride"),
                    "pac_url": settings.get("AutoConfigURL"),
                },
                "winhttp": parse_winhttp_proxy(winhttp),
            },
        }

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        route = parse_colon_pairs(read_text(ctx, ctx.run("network/route-default.txt", ("route", "-n", "get", "default"),
                                                         timeout=5)) or "")
        scutil_dns = read_text(ctx, ctx.run("network/scutil-dns.txt", ("scutil", "--dns"), timeout=5)) or ""
        scutil_proxy = read_text(ctx, ctx.run("network/scutil-proxy.txt", ("scutil", "--proxy"), timeout=5)) or ""
        nameservers = list(dict.fromkeys(re.findall(r"nameserver\[\d+\]\s*:\s*(\S+)", scutil_dns)))
        search = list(dict.fromkeys(re.findall(r"search domain\[\d+\]\s*:\s*(\S+)", scutil_dns)))
        return {
            "default_routes": [{"gateway": route.get("gateway"), "interface": route.get("interface"), "metric": None}]
            if route.get("gateway") or route.get("interface") else [],
            "dns": {"nameservers": nameservers, "search": search},
            "proxy": {"environment": _env_proxies(ctx), "system": parse_scutil_proxy(scutil_proxy)},
        }

    def _reachability(self, ctx: CollectContext) -> list[dict[str, Any]]:
        targets, invalid = [], []
        if ctx.options.server_url:
            try:
                targets.append(server_target(ctx.options.server_url))
            except ValueError as exc:
                invalid.append({"target": ctx.options.server_url, "role": "server", "reachable": False,
                                "error": str(exc)})
        for text in ctx.options.reachability_hosts:
            try:
                targets.append(parse_target(text))
            except ValueError as exc:
                invalid.append({"target": text, "role": "host", "reachable": False, "error": str(exc)})
        skipped = [{"target": t.label, "role": t.role, "reachable": False, "error": f"more than {MAX_TARGETS} targets"}
                   for t in targets[MAX_TARGETS:]]
        targets = targets[:MAX_TARGETS]
        budget = min(DNS_TIMEOUT + CONNECT_TIMEOUT * 2, ctx.remaining() - 0.5)
        results = probe_all(targets, budget) if targets and budget > 0.2 else [
            {"target": t.label, "role": t.role, "reachable": False, "error": "no time left"} for t in targets]
        results += invalid + skipped
        if results:
            ctx.write_json("network/reachability.json", results, source="python:socket", kind=ItemKind.FACTS)
        return results


def interfaces() -> list[dict[str, Any]]:
    """Return every network interface psutil sees, with its state, speed and addresses."""
    stats = psutil.net_if_stats()
    families = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6", psutil.AF_LINK: "mac"}
    found = []
    for name, addresses in sorted(psutil.net_if_addrs().items()):
        stat = stats.get(name)
        found.append({
            "name": name,
            "up": stat.isup if stat else None,
            "speed_mbps": stat.speed if stat else None,
            "mtu": stat.mtu if stat else None,
            "addresses": [
                {"family": families.get(a.family, str(a.family)), "address": a.address, "netmask": a.netmask}
                for a in addresses
            ],
        })
    return found


def parse_resolv_conf(text: str) -> dict[str, Any]:
    """Parse nameserver, search and options lines of resolv.conf(5)."""
    nameservers, search, options = [], [], []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        if fields[0] == "nameserver":
            nameservers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            search += fields[1:]
        elif fields[0] == "options":
            options += fields[1:]
    # 127.0.0.53 is systemd-resolved's stub; the real servers are in resolvectl's output.
    return {"nameservers": nameservers, "search": search, "options": options,
            "stub_resolver": "127.0.0.53" in nameservers}


def parse_resolvectl(text: str) -> list[str]:
    """Return the DNS servers listed in ``resolvectl status`` output, in order, without repeats."""
    servers: list[str] = []
    for match in re.finditer(r"(?:Current DNS Server|DNS Servers):\s*([^\n]+(?:\n\s{10,}[^\n:]+)*)", text):
        for server in match.group(1).split():
            if server not in servers:
                servers.append(server)
    return servers


def parse_winhttp_proxy(text: str) -> dict[str, Any]:
    """Parse ``netsh winhttp show proxy``: direct access, or the proxy server(s) and bypass list."""
    if "Direct access" in text:
        return {"direct": True, "server": None, "bypass": None}
    server = re.search(r"Proxy Server\(s\)\s*:\s*(.+)", text)
    bypass = re.search(r"Bypass List\s*:\s*(.+)", text)
    return {
        "direct": False if server else None,
        "server": server.group(1).strip() if server else None,
        "bypass": bypass.group(1).strip() if bypass else None,
    }


def parse_scutil_proxy(text: str) -> dict[str, Any]:
    """Parse ``scutil --proxy`` into the enabled HTTP/HTTPS/SOCKS proxies, the PAC URL and exceptions."""
    values = {}
    for line in text.splitlines():
        match = re.match(r"\s*([A-Za-z]+)\s*:\s*(.+?)\s*$", line)
        if match:
            values[match.group(1)] = match.group(2)
    proxies = {}
    for kind in ("HTTP", "HTTPS", "SOCKS", "FTP"):
        if values.get(f"{kind}Enable") == "1":
            proxies[kind.lower()] = f"{values.get(f'{kind}Proxy')}:{values.get(f'{kind}Port')}"
    exceptions = re.findall(r"^\s*\d+\s*:\s*(\S+)\s*$", text.split("ExceptionsList", 1)[1], re.MULTILINE) \
        if "ExceptionsList" in text else []
    return {
        "proxies": proxies,
        "pac_url": values.get("ProxyAutoConfigURLString") if values.get("ProxyAutoConfigEnable") == "1" else None,
        "auto_discovery": values.get("ProxyAutoDiscoveryEnable") == "1",
        "exceptions": exceptions,
    }


def _env_proxies(ctx: CollectContext) -> dict[str, str]:
    return {name: value for name, value in ctx.env.items() if name.lower() in PROXY_VARIABLES}


def _parse_env_file(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):]
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("\"'")
    return values
