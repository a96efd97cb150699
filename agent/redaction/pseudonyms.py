"""The consistent mapping from identifying values to pseudonyms, kept on the PC.

The same address, host, user or e-mail always gets the same pseudonym within one
:class:`PseudonymMap`, so an engineer can follow it through the whole bundle
without learning it. Pseudonyms (``ip-3``, ``host-1``, ``email-2@redacted.invalid``)
are deliberately not valid addresses or FQDNs, so no detector matches them again.
The map itself is never uploaded; the CLI may save it locally to decode an
engineer's question ("what is host-2?").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from agent.regexes import rx

IPV4 = "ipv4"
IPV6 = "ipv6"
MAC = "mac"
HOSTNAME = "hostname"
USERNAME = "username"
EMAIL = "email"

PSEUDONYM_DOMAIN = "redacted.invalid"  # RFC 2606: .invalid can never be a real domain

_FORMATS = {
    IPV4: "ip-{n}",
    IPV6: "ip6-{n}",
    MAC: "mac-{n}",
    HOSTNAME: "host-{n}",
    USERNAME: "user-{n}",
    EMAIL: "email-{n}@" + PSEUDONYM_DOMAIN,
}
KINDS = tuple(_FORMATS)
_PSEUDONYM_RE = {kind: rx(re.escape(fmt).replace(r"\{n\}", r"\d+"), re.I) for kind, fmt in _FORMATS.items()}


def is_pseudonym(value: str) -> bool:
    """Whether ``value`` is one of the pseudonyms this module hands out (``host-1``, ``email-2@redacted.invalid``)."""
    return any(pattern.fullmatch(value) for pattern in _PSEUDONYM_RE.values())


def canonical(kind: str, original: str) -> str:
    """Return the form under which two spellings of one value are the same (case, IPv6 zeros, MAC separators)."""
    if kind == IPV6:
        return ipaddress.IPv6Address(original.split("%", 1)[0]).compressed
    if kind == MAC:
        digits = re.sub(r"[^0-9a-f]", "", original.lower())
        return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))
    if kind in (HOSTNAME, EMAIL):
        return original.lower().rstrip(".")
    return original  # IPv4 is already canonical; user names are case-sensitive (POSIX)


class PseudonymMap:
    """Original value -> pseudonym, per kind; remembers every spelling seen so verification can look for leaks."""

    def __init__(self) -> None:
        self._by_kind: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        self._spellings: dict[str, set[str]] = {kind: set() for kind in KINDS}
        self._allocated: dict[str, int] = {kind: 0 for kind in KINDS}
        self.version = 0  # grows whenever a new original or spelling is recorded
        self.versions: dict[str, int] = {kind: 0 for kind in KINDS}  # the same, per kind

    def pseudonym(self, kind: str, original: str) -> str:
        """Return the pseudonym for ``original`` of ``kind``, allocating the next number on first sight."""
        table = self._by_kind[kind]
        key = canonical(kind, original)
        alias = table.get(key)
        if alias is None:
            self._allocated[kind] += 1
            alias = _FORMATS[kind].format(n=self._allocated[kind])
            table[key] = alias
            self._changed(kind)
        if original not in self._spellings[kind]:
            self._spellings[kind].add(original)
            self._changed(kind)
        return alias

    def _changed(self, kind: str) -> None:
        self.version += 1
        self.versions[kind] += 1

    def link(self, kind: str, original: str, same_as: str) -> str:
        """Give ``original`` the pseudonym of ``same_as`` (a PC's short name and its FQDN are one host)."""
        alias = self.pseudonym(kind, same_as)
        key = canonical(kind, original)
        if self._by_kind[kind].get(key) != alias:
            self._by_kind[kind][key] = alias
            self._changed(kind)
        if original not in self._spellings[kind]:
            self._spellings[kind].add(original)
            self._changed(kind)
        return alias

    @staticmethod
    def is_pseudonym(kind: str, value: str) -> bool:
        """Return True if ``value`` is itself a pseudonym of ``kind`` (so it is never pseudonymised again)."""
        return _PSEUDONYM_RE[kind].fullmatch(value) is not None

    def spellings(self, kind: str) -> frozenset[str]:
        """Return every original spelling of ``kind`` seen so far (what must not appear in the output)."""
        return frozenset(self._spellings[kind])

    def items(self) -> Iterator[tuple[str, str, str]]:
        """Yield ``(kind, original, pseudonym)`` for every recorded value, originals in canonical form."""
        for kind, table in self._by_kind.items():
            for original, alias in table.items():
                yield kind, original, alias

    def as_dict(self) -> dict[str, dict[str, str]]:
        """Return ``{kind: {original: pseudonym}}`` for saving locally (never for upload)."""
        return {kind: dict(table) for kind, table in self._by_kind.items() if table}

    def copy(self) -> PseudonymMap:
        """Return an independent copy (verification scans with one so it never records anything)."""
        other = PseudonymMap()
        other._by_kind = {kind: dict(table) for kind, table in self._by_kind.items()}
        other._spellings = {kind: set(seen) for kind, seen in self._spellings.items()}
        other._allocated = dict(self._allocated)
        other.version = self.version
        other.versions = dict(self.versions)
        return other

    def __len__(self) -> int:
        return sum(self._allocated.values())
