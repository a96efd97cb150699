"""The detectors, their order, and the cheap gate that decides which lines need them.

A detector takes one line and returns it with every match replaced, reporting each
replacement by name. Order matters: specific token formats run before the generic
``key = value`` detector (so ``password=ghp_...`` counts as a GitHub token and the
setting then holds only a redaction token), secrets before pseudonyms, e-mail
before host names. Every detector also declares its triggers (see
:mod:`agent.redaction.triggers`), so lines that no detector could change (most of
a log) are copied without running any of them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from typing import Protocol

from agent.redaction import blocks
from agent.redaction.assignments import Assignments, SpecialForms, XmlElements, is_not_secret, looks_like_prose
from agent.redaction.identities import Emails, Hostnames, Usernames
from agent.redaction.network import IPv4Addresses, IPv6Addresses, MacAddresses
from agent.redaction.options import RedactionOptions
from agent.redaction.pseudonyms import PSEUDONYM_DOMAIN, USERNAME, PseudonymMap
from agent.redaction.tokens import Hit, is_redacted, token
from agent.redaction.triggers import Triggers, line_starts

PRIVATE_KEY = "private-key"
URL_PASSWORD = "url-password"


class Detector(Protocol):
    """One kind of sensitive value, found and replaced within a single line."""

    names: tuple[str, ...]

    def triggers(self) -> Triggers:
        """Return what every line this detector could change contains."""

    def apply(self, line: str, hit: Hit) -> str:
        """Return ``line`` with every match replaced, calling ``hit(name)`` once per replacement."""


class PatternDetector:
    """A fixed format: replace the ``secret`` group (or the whole match) of ``pattern`` with a token."""

    def __init__(
        self,
        name: str,
        pattern: str,
        literals: tuple[str, ...],
        *,
        valid: Callable[[str], bool] | None = None,
    ) -> None:
        self.name = name
        self.names = (name,)
        self._pattern = re.compile(pattern)
        self._triggers = Triggers(literals)
        self._valid = valid
        self._group: int | str = "secret" if "secret" in self._pattern.groupindex else 0

    def triggers(self) -> Triggers:
        return self._triggers

    def apply(self, line: str, hit: Hit) -> str:
        return self._pattern.sub(lambda m: self._replace(m, hit), line)

    def _replace(self, m: re.Match[str], hit: Hit) -> str:
        value = m.group(self._group)
        if is_redacted(value) or (self._valid is not None and not self._valid(value)):
            return m.group(0)
        hit(self.name)
        s, e = m.span(self._group)
        whole = m.group(0)
        return whole[: s - m.start()] + token(self.name) + whole[e - m.start() :]


_PSEUDONYM_INSIDE = re.compile(r"(?:user|host|ip6?|mac|email)-\d+")


def _looks_like_token(value: str) -> bool:
    """A bearer credential has a digit or symbol, or is long: "Bearer authentication" is prose.

    A value holding a pseudonym (``/home/user-1``) is text that was already scrubbed.
    """
    if _PSEUDONYM_INSIDE.search(value):
        return False
    return len(value) >= 24 or (len(value) >= 12 and re.search(r"[\d._~+/=-]", value) is not None)


def _is_basic_credential(value: str) -> bool:
    """``Basic <base64>`` outside a header counts only if it decodes to printable ``user:password``."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


_AUTH_HEADER = re.compile(r"(?i)(?<![\w-])(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?")
_AUTH_SCHEME = re.compile(
    r"(?i)(bearer|basic|token|negotiate|ntlm|apikey|api-key|digest|sharedkey(?:lite)?|aws4-hmac-sha256|"
    r"hmac-sha256|gssapi|sso-key)[ \t]+"
)
_SCHEME_DETECTOR = {"bearer": "bearer-token", "basic": "basic-auth"}


class AuthorizationHeaders:
    """``Authorization: <scheme> <credentials>`` in HTTP dumps, curl commands and JSON: keep the scheme."""

    names = ("bearer-token", "basic-auth", "authorization")

    def triggers(self) -> Triggers:
        return Triggers(("authorization",))

    def apply(self, line: str, hit: Hit) -> str:
        out: list[str] = []
        done = 0
        for m in _AUTH_HEADER.finditer(line):
            if m.start() < done:
                continue
            start = m.end()
            scheme = _AUTH_SCHEME.match(line, start)
            name = "authorization"
            if scheme:
                start = scheme.end()
                name = _SCHEME_DETECTOR.get(scheme.group(1).lower(), "authorization")
            quote = line[m.end() - 1] if line[m.end() - 1 : m.end()] in ("'", '"') else ""
            if quote:
                end = line.find(quote, start)
                end = len(line) if end == -1 else end
            elif scheme and name != "authorization":
                credential = re.match(r"[^\s\"',;]+", line[start:])
                end = start + (credential.end() if credential else 0)
            else:
                end = len(line.rstrip())
            value = line[start:end]
            if is_not_secret(value) or (not scheme and not quote and looks_like_prose(value, line[end:])):
                continue  # "authorization: denied for role viewer" is a status, not a credential
            out.append(line[done:start])
            out.append(token(name))
            hit(name)
            done = end
        if not out:
            return line
        out.append(line[done:])
        return "".join(out)


_URL_CREDENTIALS = re.compile(
    r"(?i)(?<![\w+.-])(?P<scheme>[a-z][a-z0-9+.\-]{1,20}://)(?P<user>[^\s:/?#@\[\]\"'<>]*)"
    r":(?P<password>[^\s/?#\"'<>]*)@(?=[\w\[])"
)
_PROXY_CREDENTIALS = re.compile(
    # A value with a scheme (http://user:pw@host) is the URL pattern's: the setting's name must start
    # the line or follow a space or quote (not "http://proxyuser:" nor "svc-proxy:"), and a "//" after
    # the colon means the scheme, never a user.
    r"(?i)(?P<prefix>(?<![^\s\"'])\w*proxy\w*[\"']?[ \t]*[=:][ \t]*[\"']?)(?P<user>[^\s:/@\"']+):(?!//)(?P<password>[^\s@\"']+)@"
)


class UrlCredentials:
    """``scheme://user:password@host`` and ``HTTPS_PROXY=user:password@proxy``: remove the password,
    pseudonymise the user only when user names are pseudonymised."""

    names = (URL_PASSWORD, USERNAME)

    def __init__(self, pseudonyms: PseudonymMap, usernames: bool) -> None:
        self._pseudonyms = pseudonyms
        self._usernames = usernames

    def triggers(self) -> Triggers:
        return Triggers(("://", "proxy"))

    def apply(self, line: str, hit: Hit) -> str:
        line = _URL_CREDENTIALS.sub(lambda m: self._replace(m, "scheme", hit), line)
        return _PROXY_CREDENTIALS.sub(lambda m: self._replace(m, "prefix", hit), line)

    def _replace(self, m: re.Match[str], lead: str, hit: Hit) -> str:
        user, password = m.group("user"), m.group("password")
        if not password or is_redacted(password) or m.string.startswith(PSEUDONYM_DOMAIN, m.end()):
            return m.group(0)  # nothing, already scrubbed, or a pseudonymised e-mail address
        hit(URL_PASSWORD)
        if self._usernames and user and not is_redacted(user) and not PseudonymMap.is_pseudonym(USERNAME, user):
            user = self._pseudonyms.pseudonym(USERNAME, user)
            hit(USERNAME)
        return f"{m.group(lead)}{user}:{token(URL_PASSWORD)}@"


def _secret_formats() -> list[Detector]:
    """Service tokens with a recognisable shape, most specific first."""
    b64url = r"[A-Za-z0-9_\-]"
    return [
        PatternDetector(
            PRIVATE_KEY,  # a whole PEM key on one line: JSON "private_key" fields, env vars with \n
            r"-{4,5} ?BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY(?: BLOCK)? ?-{4,5}"
            r".*?-{4,5} ?END \1PRIVATE KEY(?: BLOCK)? ?-{4,5}",
            ("begin",),
        ),
        PatternDetector(
            "aws-access-key-id",
            # Access key ids (long-term AKIA, temporary ASIA, and the older credential prefixes); other
            # AWS unique ids (AIDA users, AROA roles...) name principals, not credentials.
            r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])",
            ("akia", "asia", "abia", "acca", "a3t"),
        ),
        PatternDetector(
            "aws-secret-key",
            r"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)[\"']?[ \t]*(?:=>|:=|[=:]|[ \t])[ \t]*[\"']?"
            r"(?P<secret>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
            ("secretaccess", "secret_access", "awssecret", "aws_secret"),
        ),
        PatternDetector("gcp-api-key", rf"(?<![\w-])AIza{b64url}{{35}}(?![\w-])", ("aiza",)),
        PatternDetector("gcp-oauth-secret", rf"(?<![\w-])GOCSPX-{b64url}{{28}}(?![\w-])", ("gocspx-",)),
        PatternDetector("gcp-access-token", rf"(?<![\w.-])ya29\.{b64url}{{20,}}", ("ya29.",)),
        PatternDetector(
            "github-token",
            r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])",
            ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        ),
        PatternDetector("gitlab-token", rf"(?<![\w-])glpat-{b64url}{{20,}}(?![\w-])", ("glpat-",)),
        PatternDetector("vault-token", r"(?<![\w.-])hv[sbr]\.[A-Za-z0-9_\-]{24,}(?![\w-])", ("hvs.", "hvb.", "hvr.")),
        PatternDetector(
            PRIVATE_KEY,  # the MAC line of a PuTTY .ppk key file, after its Private-Lines
            r"^Private-(?:MAC|Hash):[ \t]*(?P<secret>\S+)",
            ("private-mac", "private-hash"),
        ),
        PatternDetector("npm-token", r"(?<!\w)npm_[A-Za-z0-9]{36}(?!\w)", ("npm_",)),
        PatternDetector(
            "stripe-key", r"(?<!\w)(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}(?!\w)", ("k_live_", "k_test_")
        ),
        PatternDetector(
            "slack-token",
            r"(?<![\w-])(?:xox[abposr]-[0-9A-Za-z\-]{10,}|xapp-\d-[0-9A-Za-z\-]{10,})(?![\w-])",
            ("xox", "xapp-"),
        ),
        PatternDetector(
            "slack-webhook",
            r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9/_\-]{8,})",
            ("hooks.slack.com",),
        ),
        PatternDetector(
            "jwt",  # header and claims are base64url JSON objects, so both start "ey" ("{" then '"' or space)
            rf"(?<![\w-])ey[IJA]{b64url}{{8,}}\.ey{b64url}{{8,}}\.{b64url}*=*(?![\w-])",
            (".ey",),
        ),
        PatternDetector(
            "azure-storage-key",
            r"(?i:AccountKey)[ \t]*=[ \t]*(?P<secret>[A-Za-z0-9+/]{20,}={0,2})",
            ("accountkey",),
        ),
        PatternDetector(
            "azure-shared-access-key",
            r"(?i:SharedAccessKey)[ \t]*=[ \t]*(?P<secret>[A-Za-z0-9+/]{20,}={0,2})",
            ("sharedaccesskey",),
        ),
        PatternDetector(
            "azure-sas-signature",
            r"(?<![\w])(?i:sig)=(?P<secret>[A-Za-z0-9%+/=_\-]{16,})",
            ("sig=",),
        ),
        PatternDetector(
            "azure-client-secret",  # the current Entra ID client-secret format carries "Q~" at a fixed place
            r"(?<![\w~.\-])[A-Za-z0-9_~.\-]{3}\dQ~[A-Za-z0-9_~.\-]{31,34}(?![\w~.\-])",
            ("q~",),
        ),
        PatternDetector(
            "password-hash",  # crypt(3) hashes from /etc/shadow, htpasswd, cloud-init
            r"\$(?:1|2[abxy]?|5|6|7|y|gy|apr1|sha1|md5|argon2(?:id|i|d))\$[^\s:$]*\$[./A-Za-z0-9+=$,]{8,}",
            ("$",),
        ),
    ]


class Pipeline:
    """The ordered detectors for one set of options, and which lines and detectors each line needs."""

    def __init__(
        self, detectors: Sequence[Detector], pseudonyms: PseudonymMap, extra_literals: tuple[str, ...] = ()
    ) -> None:
        self.detectors = tuple(detectors)
        self.pseudonyms = pseudonyms
        self._extra_literals = extra_literals
        self._version = -1
        self._literals: tuple[str, ...] = ()
        self._by_literal: dict[str, tuple[int, ...]] = {}
        self._by_pattern: list[tuple[int, re.Pattern[str]]] = []
        self._patterns: list[re.Pattern[str]] = []

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for d in self.detectors for name in d.names))

    @property
    def triggers_version(self) -> int:
        """Changes whenever the detectors' triggers may have changed: only learned user names add any."""
        return self.pseudonyms.versions[USERNAME]

    def _refresh(self) -> None:
        if self._version == self.triggers_version:
            return
        triggers = [d.triggers() for d in self.detectors]
        literals = {lit for t in triggers for lit in t.literals} | set(self._extra_literals)
        # A literal that contains another adds nothing: wherever "password" is, "pass" is too. So
        # only the shortest literals are searched, each standing for every detector whose literal
        # contains it (which may wake a detector needlessly, never miss one).
        self._literals = tuple(sorted(lit for lit in literals if not any(o != lit and o in lit for o in literals)))
        self._by_literal = {
            short: tuple(i for i, t in enumerate(triggers) if any(short in lit for lit in t.literals))
            for short in self._literals
        }
        self._by_pattern = [(i, t.pattern) for i, t in enumerate(triggers) if t.pattern is not None]
        self._patterns = [pattern for _, pattern in self._by_pattern]
        self._version = self.triggers_version

    def line_starts(self, text: str, pos: int = 0) -> list[int] | None:
        """Return where the lines of ``text[pos:]`` start that some detector may change (None: look at all)."""
        self._refresh()
        return line_starts(text, pos, self._literals, self._patterns)

    def apply(self, line: str, hit: Hit) -> str:
        """Run the detectors whose triggers fire, in pipeline order, over one line (without its line ending)."""
        self._refresh()
        lowered = line.lower()
        active: set[int] = set()
        for literal in self._literals:
            if literal in lowered:
                active.update(self._by_literal[literal])
        for i, pattern in self._by_pattern:
            if pattern.search(line):
                active.add(i)
        for i in sorted(active):
            line = self.detectors[i].apply(line, hit)
        return line


def build_pipeline(options: RedactionOptions, pseudonyms: PseudonymMap) -> Pipeline:
    """Return the detectors for ``options`` in the order they must run."""
    detectors: list[Detector] = _secret_formats()
    detectors += [
        UrlCredentials(pseudonyms, options.usernames),
        AuthorizationHeaders(),
        PatternDetector(
            "bearer-token",
            r"(?i:\bbearer)[ \t]+(?P<secret>[A-Za-z0-9._~+/=\-]{12,})",
            ("bearer",),
            valid=_looks_like_token,
        ),
        PatternDetector(
            "basic-auth",
            r"(?i:\bbasic)[ \t]+(?P<secret>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])",
            ("basic",),
            valid=_is_basic_credential,
        ),
        SpecialForms(),
        XmlElements(),
        Assignments(),
        Emails(pseudonyms),
    ]
    if options.usernames:
        detectors.append(Usernames(pseudonyms, options.known_usernames))
    if options.hostnames:
        detectors.append(Hostnames(pseudonyms, options.known_hostnames, options.keep_hosts))
    if options.network:
        detectors += [
            MacAddresses(pseudonyms),
            IPv6Addresses(pseudonyms, options.keep_hosts),
            IPv4Addresses(pseudonyms, options.keep_hosts),
        ]
    return Pipeline(detectors, pseudonyms, extra_literals=blocks.TRIGGERS)
