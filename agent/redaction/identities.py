"""Replace who and where with consistent pseudonyms: e-mail addresses, user names, host names.

E-mail addresses are always pseudonymised (``email-N@redacted.invalid``); user and
host names only when the user asked for it. A user name learned from a path
(``/home/alice``) is from then on replaced wherever it stands as a word, because the
same name in a log line identifies the same person.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from agent.redaction.pseudonyms import EMAIL, HOSTNAME, PSEUDONYM_DOMAIN, USERNAME, PseudonymMap
from agent.redaction.tokens import Hit
from agent.redaction.triggers import Triggers
from agent.regexes import rx

# Learned user names shorter than this are only replaced in paths: a user called "al"
# replaced as a word everywhere would shred ordinary text.
MIN_LEARNED_USERNAME = 3

_EMAIL = rx(
    r"(?<![\w.%+\-])(?P<local>[A-Za-z0-9][A-Za-z0-9._%+\-]*)@"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+(?P<tld>[A-Za-z]{2,63}))"
    r"(?![\w\-]|\.[A-Za-z0-9])"
)
# Not mail domains: systemd template instances (getty@tty1.service, user@1000.service) and
# user@host on a private network (ssh deploy@web01.internal), which is a login, not a mailbox.
_NOT_MAIL_TLDS = frozenset(
    "service socket target timer mount automount path slice scope device swap "
    "internal local lan localdomain corp home intranet private".split()
)


def word_boundary_pattern(names: Iterable[str], *, ignore_case: bool) -> re.Pattern[str] | None:
    """Return a regex matching any of ``names`` as a whole word (dots inside a name allowed), or None."""
    alternatives = sorted({n for n in names if n}, key=len, reverse=True)
    if not alternatives:
        return None
    body = "|".join(re.escape(n) for n in alternatives)
    return re.compile(rf"(?<![\w.\-])(?:{body})(?![\w\-]|\.\w)", re.I if ignore_case else 0)


class Emails:
    """E-mail addresses -> ``email-N@redacted.invalid`` (always on)."""

    names = (EMAIL,)

    def __init__(self, pseudonyms: PseudonymMap) -> None:
        self._pseudonyms = pseudonyms

    def triggers(self) -> Triggers:
        return Triggers(("@",))

    def apply(self, line: str, hit: Hit) -> str:
        def replace(m: re.Match[str]) -> str:
            domain = m.group("domain").lower()
            if domain == PSEUDONYM_DOMAIN or domain.endswith("." + PSEUDONYM_DOMAIN):
                return m.group(0)
            if m.group("tld").lower() in _NOT_MAIL_TLDS:
                return m.group(0)
            if line[max(0, m.start() - 3) : m.start()] == "://":
                return m.group(0)  # URL user info, not a mailbox
            if m.group("local") == "git" and line[m.end() : m.end() + 1] == ":":
                return m.group(0)  # git@github.com:org/repo.git is a git remote
            hit(EMAIL)
            return self._pseudonyms.pseudonym(EMAIL, m.group(0))

        return _EMAIL.sub(replace, line)


_HOME_PATH = rx(
    r"(?<![\w.~])(?P<prefix>/(?:home|Users|var/home)/)(?P<user>[A-Za-z0-9_][A-Za-z0-9_.\-]*\$?)(?![\w.\-])"
)
_WINDOWS_PROFILE = rx(
    r"(?i)(?<!\w)(?P<prefix>[A-Z]:(?:\\\\|\\|/)+(?:Users|Documents and Settings)(?:\\\\|\\|/)+)"
    # Characters Windows forbids in user names ("/\\[]:;|=,+*?<>) end the name.
    r"(?:(?P<spaced>[^\\/\r\n\"*?<>|:;,=+\[\]\t]{1,64}?)(?=\\|/)|(?P<plain>[^\\/\s\"*?<>|:;,'=+\[\]]+))"
)
# Profile folders that belong to no person.
_SHARED_PROFILES = frozenset({"public", "default", "default user", "all users", "defaultuser0", "shared", "guest"})


class Usernames:
    """User names in home paths, the known user names, and every name learned so far -> ``user-N``."""

    names = (USERNAME,)

    def __init__(self, pseudonyms: PseudonymMap, known: Iterable[str]) -> None:
        self._pseudonyms = pseudonyms
        self._known = tuple(n for n in known if n)
        for name in self._known:
            pseudonyms.pseudonym(USERNAME, name)  # the current user is user-1
        self._cache: tuple[int, re.Pattern[str] | None] = (-1, None)

    def _words(self) -> re.Pattern[str] | None:
        version, pattern = self._cache
        if version != self._pseudonyms.versions[USERNAME]:
            learned = (n for n in self._pseudonyms.spellings(USERNAME) if len(n) >= MIN_LEARNED_USERNAME)
            pattern = word_boundary_pattern([*self._known, *learned], ignore_case=False)
            self._cache = (self._pseudonyms.versions[USERNAME], pattern)
        return pattern

    def triggers(self) -> Triggers:
        paths = ("/home/", "/users/", "\\users", "\\documents and settings", "/documents and settings")
        learned = (n for n in self._pseudonyms.spellings(USERNAME) if len(n) >= MIN_LEARNED_USERNAME)
        return Triggers((*paths, *(n.lower() for n in (*self._known, *learned))))

    def apply(self, line: str, hit: Hit) -> str:
        def replace_path(m: re.Match[str]) -> str:
            user = m.group("user") if "user" in m.re.groupindex else (m.group("spaced") or m.group("plain"))
            if user.lower() in _SHARED_PROFILES or PseudonymMap.is_pseudonym(USERNAME, user.rstrip("$")):
                return m.group(0)
            hit(USERNAME)
            return m.group("prefix") + self._pseudonyms.pseudonym(USERNAME, user)

        line = _HOME_PATH.sub(replace_path, line)
        line = _WINDOWS_PROFILE.sub(replace_path, line)
        words = self._words()
        if words is None:
            return line

        def replace_word(m: re.Match[str]) -> str:
            hit(USERNAME)
            return self._pseudonyms.pseudonym(USERNAME, m.group(0))

        return words.sub(replace_word, line)


# Top-level domains that name hosts. Deliberately excludes those that collide with file
# extensions (.py .sh .md .pl .rs .so .cc .app .zip .mov), so "setup.py" stays a file name.
_HOST_TLDS = (
    "com net org edu gov mil int io info biz eu de uk fr nl ch at be se no dk fi es it us ca au jp cn "
    "ru br cz sk hu ro pt ie gr tr il nz za mx ar co dev cloud local lan internal intranet corp home "
    "localdomain arpa private test"
).split()
# Software sources and public services identify no one; keeping them keeps apt/dnf/update logs useful.
WELL_KNOWN_DOMAINS = (
    "example.com",
    "example.org",
    "example.net",
    "debian.org",
    "ubuntu.com",
    "canonical.com",
    "launchpad.net",
    "snapcraft.io",
    "fedoraproject.org",
    "redhat.com",
    "centos.org",
    "rockylinux.org",
    "almalinux.org",
    "archlinux.org",
    "opensuse.org",
    "suse.com",
    "microsoft.com",
    "windows.com",
    "windowsupdate.com",
    "office.com",
    "apple.com",
    "google.com",
    "googleapis.com",
    "gstatic.com",
    "github.com",
    "githubusercontent.com",
    "gitlab.com",
    "python.org",
    "pypi.org",
    "pythonhosted.org",
    "npmjs.org",
    "npmjs.com",
    "docker.com",
    "docker.io",
    "flathub.org",
    "mozilla.org",
    "kernel.org",
    "gnu.org",
    "freedesktop.org",
    "ntp.org",
    "cloudflare.com",
)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"


class Hostnames:
    """Fully qualified host names and the known host names -> ``host-N``, except kept hosts."""

    names = (HOSTNAME,)

    def __init__(self, pseudonyms: PseudonymMap, known: Iterable[str], keep: Iterable[str]) -> None:
        self._pseudonyms = pseudonyms
        self._keep = tuple(k.lower().rstrip(".") for k in (*keep, *WELL_KNOWN_DOMAINS, "localhost") if k)
        names: set[str] = set()
        domains: set[str] = set()
        for host in (h.strip().rstrip(".") for h in known):
            if not host:
                continue
            pseudonyms.pseudonym(HOSTNAME, host)  # this PC is host-1
            names.add(host)
            label, _, domain = host.partition(".")
            pseudonyms.link(HOSTNAME, label, host)  # and so is its short name
            names.add(label)
            if "." in domain:
                domains.add(domain)  # pc42.corp.acme.xyz: every *.corp.acme.xyz is internal too
        self._names = word_boundary_pattern(names, ignore_case=True)
        suffixes = "|".join([*map(re.escape, sorted(domains, key=len, reverse=True)), *_HOST_TLDS])
        self._fqdn = re.compile(
            rf"(?<![\w.\-@])(?:{_LABEL}\.)+(?:{suffixes})(?![\w\-]|\.[A-Za-z0-9])",
            re.I,
        )
        # ".se" would fire on every ".service": the top-level domain must end a word.
        self._triggers = Triggers(tuple(n.lower() for n in names), re.compile(rf"\.(?:{suffixes})(?![\w\-])", re.I))

    def triggers(self) -> Triggers:
        return self._triggers

    def _kept(self, name: str) -> bool:
        lowered = name.lower().rstrip(".")
        return any(lowered == k or lowered.endswith("." + k) for k in self._keep)

    def apply(self, line: str, hit: Hit) -> str:
        def replace(m: re.Match[str]) -> str:
            if self._kept(m.group(0)):
                return m.group(0)
            hit(HOSTNAME)
            return self._pseudonyms.pseudonym(HOSTNAME, m.group(0))

        line = self._fqdn.sub(replace, line)
        if self._names is not None:
            line = self._names.sub(replace, line)
        return line
