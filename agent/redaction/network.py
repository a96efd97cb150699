"""Replace IPv4, IPv6 and MAC addresses with consistent pseudonyms (``ip-N``, ``ip6-N``, ``mac-N``).

Addresses that identify nothing are kept: loopback, unspecified (``0.0.0.0``, ``::``),
broadcast, multicast and netmasks, plus any address the caller asked to keep.

The hard part is that four dotted numbers are also a version. ``X.Y.Z.W`` is kept as a
version, not treated as an address, when any of these holds:

* a component is greater than 255 (``Chrome 120.0.6099.109``, ``Windows 10.0.19045.3803``);
* it is glued to something an address never touches: a letter, digit, ``_`` or ``-``
  before it (``v1.2.3.4``, ``pkg-1.2.3.4``, ``foo_1.2.3.4``), or a letter, ``-``, ``~``,
  ``+`` or ``.<more>`` after it (``1.2.3.4-1``, ``1.2.3.4~rc1``, ``1.2.3.4+b1``,
  ``1.2.3.4.el9``);
* a version word or requirement operator precedes it: ``version``, ``ver``, ``v``,
  ``release``, ``build``, ``firmware``, ``fw``, ``bios``, ``revision``, ``rev``,
  ``kernel``, ``driver``, ``patch``, ``update``, ``package`` (optionally followed by
  ``:``/``=``/a quote), or ``==``, ``>=``, ``<=``, ``~=``, ``!=``;
* it is the version column of a package listing: ``dpkg -l`` (``ii  name  1.2.3.4  arch``),
  ``apt list`` (``name/suite 1.2.3.4 arch``) or ``pip list`` (``name<2+ spaces>1.2.3.4`` at
  the end of the line).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from agent.redaction.pseudonyms import IPV4, IPV6, MAC, PseudonymMap
from agent.redaction.tokens import Hit
from agent.redaction.triggers import Triggers
from agent.regexes import rx

_IPV4 = rx(r"(?<![\w.\-])(\d{1,3}+)\.(\d{1,3}+)\.(\d{1,3}+)\.(\d{1,3}+)(?![\w\-~+]|\.\w)")
_VERSION_WORD = rx(
    r"(?i)(?:\b(?:v|ver|version|versions|release|rel|build|firmware|fw|bios|revision|rev|kernel|driver|"
    r"patch|update|package|pkg)\.?|==|>=|<=|~=|!=)[ \t.]*[:=]?[ \t]*[\"'(]?[ \t]*$"
)
_DPKG_ROW_PREFIX = rx(r"[uihrp][ncHUFWti]R?[ \t]+\S+[ \t]+")
_APT_ROW_PREFIX = rx(r"[\w.+\-]+/\S+[ \t]+")
_PIP_ROW_PREFIX = rx(r"[A-Za-z][\w.+\-]*[ \t]{2,}")
_NETMASKS = frozenset(str(ipaddress.IPv4Network(f"0.0.0.0/{n}").netmask) for n in range(1, 33))

_IPV6 = rx(
    r"(?<![\w:.%\-])(?P<addr>(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?)"
    r"(?P<zone>%[\w.\-]+)?(?![\w:]|\.\d)"
)
_HEX_GROUP3 = rx(r"[0-9A-Fa-f]{3}")

_MAC = rx(
    r"(?<![\w:.\-])(?:[0-9A-Fa-f]{2}([:\-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2})(?![\w:\-]|\.\w)"
    r"|(?<![\w.])(?=[0-9.]*[A-Fa-f])[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}(?![\w.])"
)
# Quick tests for the scrubber: every address has one of these shapes somewhere.
_IPV4_QUICK = rx(r"\d\.\d{1,3}\.\d{1,3}\.\d")
_IPV6_QUICK = rx(r"::|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}")
_MAC_QUICK = rx(r"[0-9A-Fa-f]{2}([:\-])[0-9A-Fa-f]{2}\1[0-9A-Fa-f]{2}\1|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.")
_BLANK_MACS = frozenset({"00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"})


def is_version(line: str, start: int, end: int, octets: Iterable[str]) -> bool:
    """Return True if the dotted quad at ``line[start:end]`` is a version rather than an IPv4 address."""
    if any(int(o) > 255 for o in octets):
        return True
    before = line[max(0, start - 40) : start]
    if _VERSION_WORD.search(before):
        return True
    if _DPKG_ROW_PREFIX.fullmatch(line, 0, start) or _APT_ROW_PREFIX.fullmatch(line, 0, start):
        return True
    return bool(_PIP_ROW_PREFIX.fullmatch(line, 0, start) and not line[end:].strip())


def _kept_ipv4(address: str, keep: frozenset[str]) -> bool:
    if address in keep or address in _NETMASKS:
        return True
    ip = ipaddress.IPv4Address(address)
    return ip.is_loopback or ip.is_unspecified or ip.is_multicast or address == "255.255.255.255"


class IPv4Addresses:
    """IPv4 addresses -> ``ip-N``; versions that look like addresses are kept (see module docstring)."""

    names = (IPV4,)

    def __init__(self, pseudonyms: PseudonymMap, keep: Iterable[str]) -> None:
        self._pseudonyms = pseudonyms
        self._keep = frozenset(keep)

    def triggers(self) -> Triggers:
        return Triggers(pattern=_IPV4_QUICK)

    def apply(self, line: str, hit: Hit) -> str:
        def replace(m: re.Match[str]) -> str:
            address = m.group(0)
            if is_version(line, m.start(), m.end(), m.groups()) or _kept_ipv4(address, self._keep):
                return address
            hit(IPV4)
            return self._pseudonyms.pseudonym(IPV4, address)

        return _IPV4.sub(replace, line)


class IPv6Addresses:
    """IPv6 addresses -> ``ip6-N`` (zone index kept); validated, so times and C++ ``a::b`` are left alone."""

    names = (IPV6,)

    def __init__(self, pseudonyms: PseudonymMap, keep: Iterable[str]) -> None:
        self._pseudonyms = pseudonyms
        self._keep = frozenset(k.lower() for k in keep)

    def triggers(self) -> Triggers:
        return Triggers(pattern=_IPV6_QUICK)

    def apply(self, line: str, hit: Hit) -> str:
        def replace(m: re.Match[str]) -> str:
            text = m.group("addr")
            if not _HEX_GROUP3.search(text.replace(".", "")):
                return m.group(0)  # "a::b", "[::2]", "12:34:56" are not written addresses
            try:
                ip = ipaddress.IPv6Address(text)
            except ValueError:
                return m.group(0)
            if ip.is_loopback or ip.is_unspecified or ip.is_multicast or text.lower() in self._keep:
                return m.group(0)
            hit(IPV6)
            return self._pseudonyms.pseudonym(IPV6, text) + (m.group("zone") or "")

        return _IPV6.sub(replace, line)


class MacAddresses:
    """MAC addresses (``aa:bb:..``, ``AA-BB-..``, ``aabb.ccdd.eeff``) -> ``mac-N``."""

    names = (MAC,)

    def __init__(self, pseudonyms: PseudonymMap) -> None:
        self._pseudonyms = pseudonyms

    def triggers(self) -> Triggers:
        return Triggers(pattern=_MAC_QUICK)

    def apply(self, line: str, hit: Hit) -> str:
        def replace(m: re.Match[str]) -> str:
            text = m.group(0)
            if text.lower().replace("-", ":") in _BLANK_MACS:
                return text
            hit(MAC)
            return self._pseudonyms.pseudonym(MAC, text)

        return _MAC.sub(replace, line)
