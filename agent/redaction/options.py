"""What the user agreed to scrub beyond the secrets that are always removed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedactionOptions:
    """Optional pseudonymisation on top of the always-on secret detectors.

    Secrets (passwords, keys, tokens, e-mail addresses) are always removed; these
    switches add identifying but non-secret data, replaced by consistent pseudonyms
    so an engineer can still follow one address or host through the bundle.
    """

    network: bool = False  # IPv4 / IPv6 / MAC addresses -> ip-N, ip6-N, mac-N
    hostnames: bool = False  # FQDNs and known_hostnames -> host-N
    usernames: bool = False  # known_usernames, /home/<user>, C:\Users\<user> -> user-N
    known_hostnames: tuple[str, ...] = ()  # e.g. this PC's hostname
    known_usernames: tuple[str, ...] = ()  # e.g. the current user
    keep_hosts: tuple[str, ...] = ()  # never pseudonymised (host or IP), e.g. the Helpline server
