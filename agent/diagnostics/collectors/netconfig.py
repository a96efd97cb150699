"""How the PC's network is set up beyond routes and DNS: NetworkManager and Wi-Fi state, the
hosts file and the firewall.

Pass-phrases are never asked for: ``nmcli`` runs without ``--show-secrets``
and Windows' ``netsh wlan show interfaces`` does not print keys. Firewall
rules are read only where the OS lets this user read them (``nft`` and
``iptables-save`` need root); a refusal is recorded, not raised.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..context import CollectContext
from ..model import ItemStatus
from .base import ALL_PLATFORMS, Collector, read_text

NM_GENERAL = ("nmcli", "-t", "-f", "RUNNING,STATE,CONNECTIVITY,NETWORKING,WIFI", "general")
NM_DEVICES = ("nmcli", "-t", "-f", "DEVICE,TYPE,STATE,CONNECTION", "device")
NM_WIFI = ("nmcli", "-t", "-f", "ACTIVE,SSID,SIGNAL,SECURITY,CHAN", "device", "wifi", "list", "--rescan", "no")
NFT = ("nft", "list", "ruleset")
IPTABLES = ("iptables-save",)
NETSH_WLAN = ("netsh", "wlan", "show", "interfaces")
NETSH_FIREWALL = ("netsh", "advfirewall", "show", "allprofiles", "state")
MAC_AIRPORT = ("networksetup", "-getairportnetwork", "en0")
MAC_FIREWALL = ("/usr/libexec/ApplicationFirewall/socketfilterfw", "--getglobalstate")
#: Below this Wi-Fi signal (percent), calls drop and pages stall.
WEAK_SIGNAL_PERCENT = 35
_DEFAULT_HOSTS = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "ip6-allnodes",
                  "ip6-allrouters", "ip6-localnet", "ip6-mcastprefix", "broadcasthost"}


def split_nmcli(line: str) -> list[str]:
    """Split one ``nmcli -t`` line on unescaped colons (nmcli writes ``\\:`` inside values)."""
    fields, current, escaped = [], [], False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def parse_nmcli(general: str, devices: str, wifi: str) -> dict[str, Any]:
    """Turn the three ``nmcli -t`` outputs into NetworkManager state, devices and the Wi-Fi in use."""
    state: dict[str, Any] = {}
    first = general.strip().splitlines()[0] if general.strip() else ""
    if first:
        fields = split_nmcli(first) + [""] * 5
        state = {"running": fields[0] == "running", "state": fields[1] or None, "connectivity": fields[2] or None,
                 "networking": fields[3] == "enabled", "wifi_radio": fields[4] == "enabled"}
    device_rows = []
    for line in devices.splitlines():
        fields = split_nmcli(line)
        if len(fields) >= 4 and fields[1] not in ("loopback",):
            device_rows.append({"device": fields[0], "type": fields[1], "state": fields[2],
                                "connection": fields[3] or None})
    active = None
    for line in wifi.splitlines():
        fields = split_nmcli(line)
        if len(fields) >= 5 and fields[0] == "yes":
            active = {"ssid": fields[1] or None, "signal_percent": int(fields[2]) if fields[2].isdigit() else None,
                      "security": fields[3] or None, "channel": fields[4] or None}
    return {"networkmanager": state or None, "devices": device_rows, "wifi": active}


def parse_hosts(text: str) -> list[dict[str, Any]]:
    """Return the entries of a hosts file other than the loopback defaults every system ships."""
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        address, *names = line.split()
        names = [n for n in names if n.lower() not in _DEFAULT_HOSTS]
        if names and address not in ("127.0.1.1",):
            entries.append({"address": address, "names": names})
    return entries


def parse_firewall_rules(text: str, backend: str) -> dict[str, Any]:
    """Count rules and read the input chain's default policy from ``nft list ruleset`` or ``iptables-save``."""
    if backend == "nftables":
        rules = sum(1 for line in text.splitlines()
                    if line.strip() and not line.strip().startswith(("table", "chain", "type", "}", "#", "policy")))
        policy = re.search(r"chain input \{[^}]*?policy (\w+);", text, re.DOTALL)
        return {"backend": backend, "rule_count": rules, "input_policy": policy.group(1) if policy else None}
    rules = sum(1 for line in text.splitlines() if line.startswith("-A "))
    policy = re.search(r"^:INPUT (\w+)", text, re.MULTILINE)
    return {"backend": backend, "rule_count": rules, "input_policy": policy.group(1).lower() if policy else None}


def parse_netsh_wlan(text: str) -> dict[str, Any] | None:
    """Parse ``netsh wlan show interfaces``: the first interface's state, SSID, signal and radio (no keys shown)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" : ")
        if sep and key.strip() and key.strip() not in values:
            values[key.strip()] = value.strip()
    if not values.get("State") and not values.get("Name"):
        return None
    signal = re.match(r"(\d+)%", values.get("Signal", ""))
    return {"interface": values.get("Name"), "state": values.get("State"), "ssid": values.get("SSID"),
            "signal_percent": int(signal.group(1)) if signal else None, "radio": values.get("Radio type"),
            "security": values.get("Authentication"), "channel": values.get("Channel")}


def parse_netsh_firewall(text: str) -> dict[str, Any]:
    """Parse ``netsh advfirewall show allprofiles state`` into on/off per profile."""
    profiles: dict[str, bool] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"^(Domain|Private|Public) Profile Settings", line)
        if match:
            current = match.group(1).lower()
        elif current and line.startswith("State"):
            profiles[current] = line.split()[-1].upper() == "ON"
    return {"backend": "windows-firewall", "profiles": profiles,
            "enabled": all(profiles.values()) if profiles else None}


class NetConfigCollector(Collector):
    """NetworkManager and Wi-Fi, the hosts file and the firewall."""

    name = "netconfig"
    category = "netconfig"
    description = "NetworkManager and Wi-Fi state (never pass-phrases), the hosts file and the firewall rules."
    platforms = ALL_PLATFORMS
    timeout = 6.0

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        facts: dict[str, Any] = {"networkmanager": None, "devices": [], "wifi": None}
        if ctx.available("netconfig/nmcli-general.txt", "nmcli"):
            texts = [read_text(ctx, ctx.run(relpath, argv, timeout=3)) or "" for relpath, argv in (
                ("netconfig/nmcli-general.txt", NM_GENERAL), ("netconfig/nmcli-devices.txt", NM_DEVICES),
                ("netconfig/nmcli-wifi.txt", NM_WIFI))]
            facts.update(parse_nmcli(*texts))
        else:
            ctx.note("netconfig/nmcli-general.txt", " ".join(NM_GENERAL), ItemStatus.NOT_FOUND,
                     "nmcli is not installed (NetworkManager does not manage this PC's network)")
        facts["hosts"] = parse_hosts(read_text(ctx, ctx.copy_file("netconfig/hosts.txt", "/etc/hosts",
                                                                   max_bytes=256 * 1024)) or "")
        facts["firewall"] = self._linux_firewall(ctx)
        return facts

    def _linux_firewall(self, ctx: CollectContext) -> dict[str, Any] | None:
        for relpath, argv, backend in (("netconfig/nft-ruleset.txt", NFT, "nftables"),
                                       ("netconfig/iptables-save.txt", IPTABLES, "iptables")):
            if not ctx.available(relpath, argv[0]):
                continue
            item = ctx.run(relpath, argv, timeout=3)
            if item.status in (ItemStatus.OK, ItemStatus.TRUNCATED):
                return parse_firewall_rules(read_text(ctx, item) or "", backend)
            return {"backend": backend, "rule_count": None, "input_policy": None,
                    "note": f"the rules could not be read ({item.note or item.status.value})"}
        return None

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        wifi = parse_netsh_wlan(read_text(ctx, ctx.run("netconfig/netsh-wlan.txt", NETSH_WLAN, timeout=4,
                                                       ok_codes=(0, 1))) or "")
        firewall = parse_netsh_firewall(read_text(ctx, ctx.run("netconfig/netsh-firewall.txt", NETSH_FIREWALL,
                                                               timeout=4)) or "")
        hosts_path = os.path.join(ctx.env.get("SYSTEMROOT") or ctx.env.get("SystemRoot") or r"C:\Windows",
                                  "System32", "drivers", "etc", "hosts")
        hosts = []
        if ctx.recorded("netconfig/hosts.txt") or os.path.exists(hosts_path):
            hosts = parse_hosts(read_text(ctx, ctx.copy_file("netconfig/hosts.txt", hosts_path,
                                                             max_bytes=256 * 1024)) or "")
        return {"networkmanager": None, "devices": [], "wifi": wifi, "hosts": hosts, "firewall": firewall}

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        airport = read_text(ctx, ctx.run("netconfig/airport-network.txt", MAC_AIRPORT, timeout=3)) or ""
        ssid = re.search(r"Current Wi-Fi Network:\s*(.+)", airport)
        firewall_text = read_text(ctx, ctx.run("netconfig/firewall-state.txt", MAC_FIREWALL, timeout=3)) or ""
        state = re.search(r"State = (\d)", firewall_text)
        hosts = parse_hosts(read_text(ctx, ctx.copy_file("netconfig/hosts.txt", "/etc/hosts",
                                                         max_bytes=256 * 1024)) or "")
        return {
            "networkmanager": None, "devices": [],
            "wifi": {"ssid": ssid.group(1).strip(), "signal_percent": None, "state": "connected"} if ssid else
            {"ssid": None, "signal_percent": None, "state": "not associated"}
            if "not associated" in airport.lower() else None,
            "hosts": hosts,
            "firewall": {"backend": "application-firewall", "enabled": None if not state else state.group(1) != "0"},
        }
