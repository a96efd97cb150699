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
import functools
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from agent.redaction import blocks
from agent.redaction.credentials import (
    PSEUDONYMS, ColonFiles, CredentialPositions, PasswordFlags, PasswordsNamedAfter, SpokenPasswords, looks_random,
)
from agent.redaction.assignments import Assignments, SpecialForms, XmlElements, is_not_secret, looks_like_prose
from agent.redaction.identities import Emails, Hostnames, Usernames
from agent.redaction.network import IPv4Addresses, IPv6Addresses, MacAddresses
from agent.redaction.options import RedactionOptions
from agent.redaction.pseudonyms import PSEUDONYM_DOMAIN, USERNAME, PseudonymMap
from agent.redaction.tokens import Hit, is_redacted, token
from agent.redaction.triggers import Triggers, line_starts, literals_in, literals_within
from protocol import pairing
from protocol.errors import InvalidInputError
from agent.regexes import rx

PRIVATE_KEY = "private-key"
URL_PASSWORD = "url-password"
# Terminal control sequences: colours, cursor moves, erasing. One without parameters only if it is a colour, a
# cursor home or an erase: "\x1b[" before a token's first letter would otherwise take that letter for its end.
_TERMINAL_CODES = rx(r"\x1b\[(?:[0-9;:]+[ -/]*[@-~]|[mKJH])")
# A JSON \\u escape (not itself escaped) of a character outside ASCII.
_LETTER_ESCAPE = rx(r"(?<!\\)((?:\\\\)*)\\u([0-9a-fA-F]{4})")


# The spaces that stand between a password's word and its separator in French and in pasted text.
_ODD_SPACES = frozenset("\u00a0\u2007\u202f\u200b")


def _as_read(line: str) -> tuple[str, set[str]]:
    """``line`` without terminal colours, its \\u-escaped letters unescaped and composed (NFC); and the
    characters that were unescaped."""
    plain = _TERMINAL_CODES.sub("", line) if "\x1b" in line else line
    unescaped: set[str] = set()
    if "\\u" in plain:
        plain = _LETTER_ESCAPE.sub(functools.partial(_unescape_letter, unescaped), plain)
    if not plain.isascii() and not unicodedata.is_normalized("NFC", plain):
        plain = unicodedata.normalize("NFC", plain)
    return plain, unescaped


def _unescape_letter(unescaped: set[str], m: re.Match[str]) -> str:
    """The escaped character itself if it is a letter, a mark or one of :data:`_ODD_SPACES` (so JSON stays valid),
    else as it was;
    ``unescaped`` collects the characters so written."""
    char = chr(int(m.group(2), 16))
    if ord(char) < 0x80 or not (unicodedata.category(char).startswith(("L", "M")) or char in _ODD_SPACES):
        return m.group(0)
    unescaped.add(char)
    return m.group(1) + char


# How many times a changed line is run through the detectors at most before it counts as settled.
_SETTLE_PASSES = 4


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
        shape: str | None = None,
    ) -> None:
        self.name = name
        self.names = (name,)
        self._pattern = rx(pattern)
        # A format without a fixed substring is selected by ``shape``, a regex every match contains.
        self._triggers = Triggers(literals, rx(shape) if shape else None)
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
        if PSEUDONYMS.search(value) and not self._pattern.search(PSEUDONYMS.sub("0", m.group(0))):
            # It reaches the format only with a pseudonym the redaction wrote for a name or an address (an
            # earlier pass's output, not a secret): as the original was left alone, so is this.
            return m.group(0)
        hit(self.name)
        s, e = m.span(self._group)
        whole = m.group(0)
        return whole[: s - m.start()] + token(self.name) + whole[e - m.start() :]


_PSEUDONYM_INSIDE = rx(r"(?:user|host|ip6?|mac|email)-\d+")


def _looks_like_token(value: str) -> bool:
    """A bearer credential has a digit or symbol, or is long: "Bearer authentication" is prose.

    A value holding a pseudonym (``/home/user-1``) is text that was already scrubbed.
    """
    if _PSEUDONYM_INSIDE.search(value):
        return False
    return len(value) >= 24 or (len(value) >= 12 and re.search(r"[\d._~+/=-]", value) is not None)


def _mixed_case(value: str) -> bool:
    """Random tokens mix upper and lower case letters (and usually digits); words and numbers do not."""
    return any(c.isupper() for c in value) and any(c.islower() for c in value)


def _is_basic_credential(value: str) -> bool:
    """``Basic <base64>`` outside a header counts only if it decodes to printable ``user:password``."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


_AUTH_HEADER = rx(r"(?i)(?<![\w-])(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?")
_AUTH_SCHEME = rx(
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


# A JSON encoder may escape the slashes: "https:\/\/user:pw@host\/x".
_URL_START = rx(r"(?i)(?<![\w+.-])[a-z][a-z0-9+.\-]{1,20}:(?://|\\/\\/)")
_ESCAPED_SCHEME = ":\\/\\/"
# The URL runs to whitespace, a quote or an angle bracket; a password may hold anything else.
_HOST_LIKE = rx(r"localhost|\[[0-9A-Fa-f:.]+\]|[\w\-]+(?:\.[\w\-]+)+")
_TOKEN_USER = rx(r"[A-Za-z0-9_\-.~+/=%]+")
_URL_BODY = rx(r"[^\s\"'<>`]*")
# Outside single quotes a password may hold one too: `postgres://u:it's@db/x`.
_URL_BODY_WITH_QUOTE = rx(r"[^\s\"<>`]*")
# A password may also hold a quote, an angle bracket or a backtick (unencoded, as people type them): when the URL cut
# at those has no user-info, the URL read to the next space is tried, its user name free of them.
_URL_BODY_TO_SPACE = rx(r"\S*")
_URL_DELIMITERS = "\"'<>`"
# Where the password ends: an "@" followed by a host (name, IPv4 or [IPv6], optional port), then the end
# of the URL or its path, query or fragment.
_AT_HOST = rx(
    # (several hosts: "mongodb://u:pw@h1:27017,h2:27017/db"; an escaped slash: "@host\/x")
    r"@(?=(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[\w\-.]*[\w])?)(?::\d{1,5})?"
    r"(?:,(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[\w\-.]*[\w])?)(?::\d{1,5})?)*(?:[/?#\\]|[)\]}>.,;:!']*$))"
)
# A URI without its scheme after a tool's flag: `mysqlsh --uri root:pw@localhost:3306`, `--dsn=u:pw@db/x`; also
# in a JSON argument list ("--uri", "root:pw@db"). A "//" after the colon is a scheme's, never a password.
_URI_FLAG_CREDENTIALS = rx(
    r"(?i)(?P<prefix>(?<![^\s\"'\[,])--(?:uri|url|dsn|connect(?:ion)?(?:-string|-uri)?|server-uri)"
    r"(?:[ \t]*=[ \t]*|[ \t]+|[\"'],[ \t]*)[\"']?)"
    r"(?P<user>[^\s:/@\"']+):(?!//)(?P<password>[^\s\"']+)@(?=[\w\[])"
)
# A URL percent-encoded into another URL's query ("?next=https%3A%2F%2Falex%3Apw%40host%2Fx"): its password ends at
# the first encoded "@" that a host follows.
_ENCODED_URL_CREDENTIALS = rx(
    r"(?i)(?P<prefix>(?<![\w+.-])[a-z][a-z0-9+.\-]{1,20}%3A%2F%2F[^\s%&=/?#:@]+(?:%(?!3A|40)[0-9A-F]{2}[^\s%&=/?#:@]*)*%3A)"
    r"(?P<password>[^\s&]+?)(?P<at>%40)(?=[A-Za-z0-9\[])"
)
_PROXY_CREDENTIALS = rx(
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
        return Triggers(("://", _ESCAPED_SCHEME, "%3a%2f%2f", "proxy", "--uri", "--url", "--dsn", "--connect"))

    def apply(self, line: str, hit: Hit) -> str:
        if "://" in line or _ESCAPED_SCHEME in line:
            line = self._urls(line, hit)
        if "--" in line:
            line = _URI_FLAG_CREDENTIALS.sub(lambda m: self._replace(m, "prefix", hit), line)
        if "%2f%2f" in line.lower():
            line = _ENCODED_URL_CREDENTIALS.sub(lambda m: self._replace_encoded(m, hit), line)
        return _PROXY_CREDENTIALS.sub(lambda m: self._replace(m, "prefix", hit), line)

    def _urls(self, line: str, hit: Hit) -> str:
        out: list[str] = []
        done = 0
        for start in _URL_START.finditer(line):
            if start.start() < done:
                continue
            body_start = start.end()
            quoted = start.start() > 0 and line[start.start() - 1] == "'"
            body = (_URL_BODY if quoted else _URL_BODY_WITH_QUOTE).match(line, body_start).group(0)  # type: ignore[union-attr]
            if body.startswith("[REDACTED:"):
                continue  # the user-info was a token, already replaced
            userinfo = _userinfo(body)
            if userinfo is None:
                loose = _URL_BODY_TO_SPACE.match(line, body_start).group(0)  # type: ignore[union-attr]
                userinfo = _userinfo(loose) if len(loose) > len(body) else None
                if userinfo is None or userinfo[1] is None or any(c in userinfo[0] for c in _URL_DELIMITERS):
                    continue
            user, password = userinfo
            end = body_start + len(user) + (len(password) + 1 if password is not None else 0)
            if password is None:
                # No colon: a random user-info is a token used as the user name (https://<token>@host).
                if not _TOKEN_USER.fullmatch(user) or line.startswith(PSEUDONYM_DOMAIN, end + 1) or not looks_random(user):
                    continue
                out.append(line[done:body_start])
                out.append(token(URL_PASSWORD))
                hit(URL_PASSWORD)
                done = end
                continue
            if not password or is_redacted(password) or line.startswith(PSEUDONYM_DOMAIN, end + 1):
                continue  # nothing, already scrubbed, or a pseudonymised e-mail address
            hit(URL_PASSWORD)
            if self._usernames and user and not is_redacted(user) and not PseudonymMap.is_pseudonym(USERNAME, user):
                user = self._pseudonyms.pseudonym(USERNAME, user)
                hit(USERNAME)
            out.append(line[done:body_start])
            out.append(f"{user}:{token(URL_PASSWORD)}")
            done = end
        if not out:
            return line
        out.append(line[done:])
        return "".join(out)

    @staticmethod
    def _replace_encoded(m: re.Match[str], hit: Hit) -> str:
        if is_redacted(m.group("password")):
            return m.group(0)
        hit(URL_PASSWORD)
        return m.group("prefix") + token(URL_PASSWORD) + m.group("at")

    def _replace(self, m: re.Match[str], lead: str, hit: Hit) -> str:
        user, password = m.group("user"), m.group("password")
        if not password or is_redacted(password) or m.string.startswith(PSEUDONYM_DOMAIN, m.end()):
            return m.group(0)  # nothing, already scrubbed, or a pseudonymised e-mail address
        hit(URL_PASSWORD)
        if self._usernames and user and not is_redacted(user) and not PseudonymMap.is_pseudonym(USERNAME, user):
            user = self._pseudonyms.pseudonym(USERNAME, user)
            hit(USERNAME)
        return f"{m.group(lead)}{user}:{token(URL_PASSWORD)}@"


class TwilioCredentials:
    """Twilio account or API key SIDs (``AC``/``SK`` and 32 hex digits) and the secret written next to one:
    ``-u ACxx:token``, ``Client("ACxx", "token")``, ``sid=ACxx token=xx``."""

    name = "twilio-key"
    names = (name,)

    def __init__(self, prefix: str) -> None:
        # One detector per prefix: a search for a fixed prefix is fast, an alternation is not.
        self._sid = rx(rf"(?<![A-Za-z0-9]){prefix}[0-9a-fA-F]{{32}}(?![A-Za-z0-9])")
        self._trigger = rx(rf"{prefix}[0-9a-fA-F]{{32}}")

    def triggers(self) -> Triggers:
        return Triggers((), self._trigger)

    def apply(self, line: str, hit: Hit) -> str:
        def sid(m: re.Match[str]) -> str:
            hit(self.name)
            return token(self.name)

        def secret(m: re.Match[str]) -> str:
            hit(self.name)
            return m.group("sid") + m.group("gap") + token(self.name)

        line = self._sid.sub(sid, line)
        # The SID was replaced first, so the secret follows a redaction token.
        return _TWILIO_SECRET_AFTER_SID.sub(secret, line) if "twilio-key]" in line else line


class AwsAccessKeys:
    """AWS access key ids, and the secret key written right after one (the console's credentials CSV:
    ``AKIA…,<40 characters>``; ``AKIA… <secret>``), which has no name before it."""

    name = "aws-access-key-id"
    names = (name, "aws-secret-key")
    # Access key ids (long-term AKIA, temporary ASIA, and the older credential prefixes); other
    # AWS unique ids (AIDA users, AROA roles...) name principals, not credentials.
    _ID = rx(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])")
    _SECRET_AFTER_ID = rx(
        # "AKIA…,secret" (the console's CSV), "AKIA… secret", "AKIA… / secret" (a note), "AKIA…:secret"
        r"(?P<id>\[REDACTED:aws-access-key-id\])(?P<gap>[ \t]*[,;|\t:/][ \t]*[\"']?|[ \t]+[\"']?)"
        r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
    )

    def triggers(self) -> Triggers:
        return Triggers(("akia", "asia", "abia", "acca", "a3t"))

    def apply(self, line: str, hit: Hit) -> str:
        def key_id(m: re.Match[str]) -> str:
            hit(self.name)
            return token(self.name)

        def secret(m: re.Match[str]) -> str:
            if not looks_random(m.group("secret")):
                return m.group(0)
            hit("aws-secret-key")
            return m.group("id") + m.group("gap") + token("aws-secret-key")

        line = self._ID.sub(key_id, line)
        return self._SECRET_AFTER_ID.sub(secret, line) if "aws-access-key-id]" in line else line


_TWILIO_SECRET_AFTER_SID = rx(
    r"(?P<sid>\[REDACTED:twilio-key\])(?P<gap>[^A-Za-z0-9\n]{1,8}(?:[A-Za-z_\-]{1,24}[ \t]*[:=][ \t]*[\"']?)?)"
    r"(?P<secret>[0-9a-zA-Z]{32})(?![A-Za-z0-9])"
)


def _userinfo(body: str) -> tuple[str, str | None] | None:
    """Split the user-info off a URL without its scheme: (user, password or None), or None if it has none.

    The password may hold ``@``, ``#``, ``?``, ``/`` and ``%``: it ends at the last ``@`` that is followed
    by a host. ``example.net:8080/path@x`` is a host and a port, not a user and a password.
    """
    ats = [m.start() for m in _AT_HOST.finditer(body)]
    if not ats:
        return None
    colon = body.find(":")
    first_end = min((i for i in (body.find(c) for c in "/?#") if i != -1), default=len(body))
    if colon == -1 or colon > ats[-1]:
        # No password: only a user, which must end before the path.
        at = next((a for a in ats if a < first_end), None)
        return None if at is None else (body[:at], None)
    user = body[:colon]
    if any(c in user for c in "/?#@"):
        return None  # the colon is in a path or query, not in the user-info
    if ats[0] > first_end and body[colon + 1 : first_end].isdigit() and _HOST_LIKE.fullmatch(user):
        return None  # host:port/path@...
    candidates = [a for a in ats if a > colon]
    if not candidates:
        return None
    # The password may itself hold "@" followed by something host-like: it ends at the last such "@"
    # (an address in a query string after the host then goes too: more is removed, never less).
    return user, body[colon + 1 : candidates[-1]]


def _is_pairing_code(value: str) -> bool:
    """Whether ``value`` reads as a Helpline pairing code (typo-tolerant, as the server reads it).

    A lower-case word with no digit ("pair keyboard", "pairing password") is prose, not a code.
    """
    try:
        pairing.normalize(value)
    except InvalidInputError:
        return False
    return any(ch.isdigit() for ch in value) or not any(ch.islower() for ch in value)


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
        AwsAccessKeys(),
        PatternDetector(
            "aws-secret-key",
            r"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)[\"']?[ \t]*(?:=>|:=|[=:]|[ \t])[ \t]*[\"']?"
            r"(?P<secret>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
            ("secretaccess", "secret_access", "awssecret", "aws_secret"),
        ),
        PatternDetector("gcp-api-key", rf"(?<![\w-])AIza{b64url}{{30,40}}(?![\w-])", ("aiza",)),
        PatternDetector("gcp-oauth-secret", rf"(?<![\w-])GOCSPX-{b64url}{{28}}(?![\w-])", ("gocspx-",)),
        PatternDetector("gcp-access-token", rf"(?<![\w.-])ya29\.{b64url}{{20,}}", ("ya29.",)),
        PatternDetector(
            "github-token",
            r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])",
            ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        ),
        PatternDetector("gitlab-token", rf"(?<![\w-])glpat-{b64url}{{16,}}", ("glpat-",)),
        PatternDetector("vault-token", r"(?<![\w.-])hv[sbr]\.[A-Za-z0-9_\-]{24,}(?![\w-])", ("hvs.", "hvb.", "hvr.")),
        PatternDetector(
            PRIVATE_KEY,  # the MAC line of a PuTTY .ppk key file, after its Private-Lines
            r"^Private-(?:MAC|Hash):[ \t]*(?P<secret>\S+)",
            ("private-mac", "private-hash"),
        ),
        PatternDetector("npm-token", r"(?<!\w)npm_[A-Za-z0-9]{30,}(?!\w)", ("npm_",)),
        PatternDetector(
            "stripe-key",
            r"(?<!\w)(?:(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}|whsec_[0-9A-Za-z]{24,})(?!\w)",
            ("k_live_", "k_test_", "whsec_"),
        ),
        PatternDetector(
            "helpline-token",  # Helpline's own bearer tokens: a kind prefix and 32 random bytes, base64url
            r"(?<![\w-])hl[uae]_[A-Za-z0-9_\-]{20,}",
            ("hlu_", "hla_", "hle_"),
        ),
        PatternDetector(
            "helpline-pairing-code",  # ABCD-EFGH read out by an engineer: only next to "pair", as a code alone is a word
            r"(?i:pair(?:ing)?(?:[ \t_-]?code)?s?)(?:[\"']?[ \t]*(?:[:=]|is|was)?[ \t]*[\"']?)"
            r"(?P<secret>[0-9A-Za-z]{4}[ -]?[0-9A-Za-z]{4})(?![\w-])",
            ("pair",),
            valid=_is_pairing_code,
        ),
        PatternDetector(
            "anthropic-key",  # cut short at a line cap, a key is still a key: no fixed length
            r"(?<![\w-])sk-ant-[A-Za-z0-9_\-]{8,}",
            ("sk-ant-",),
        ),
        PatternDetector(
            "openai-key",  # project, service-account, admin and legacy keys; "sk-" + words is a name, so a digit is required
            r"(?<![\w-])sk-(?:(?:proj|svcacct|admin|None|or-v1)-[A-Za-z0-9_\-]{8,}|(?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{20,})",
            ("sk-",),
        ),
        PatternDetector(
            "sendgrid-key", rf"(?<![\w.-])SG\.{b64url}{{16,32}}\.{b64url}{{20,64}}(?![\w-])", ("sg.",)
        ),
        TwilioCredentials("AC"),
        TwilioCredentials("SK"),
        PatternDetector("mailgun-key", r"(?<![\w-])key-[0-9a-zA-Z]{32}(?![\w-])", ("key-",)),
        PatternDetector("pypi-token", r"(?<![\w-])pypi-[A-Za-z0-9_\-]{40,}", ("pypi-",)),
        PatternDetector("huggingface-token", r"(?<![\w-])hf_[A-Za-z0-9]{30,}(?![\w-])", ("hf_",)),
        PatternDetector(
            "dockerhub-token", r"(?<![\w-])dckr_(?:pat|oat)_[A-Za-z0-9_\-]{20,}", ("dckr_pat_", "dckr_oat_")
        ),
        PatternDetector(
            "discord-token",  # base64 of the bot's numeric id, a timestamp and an HMAC, dot-separated
            r"(?<![\w.-])[MNO][A-Za-z0-9_\-]{23,27}\.[A-Za-z0-9_\-]{6,7}\.[A-Za-z0-9_\-]{27,40}(?![\w-])",
            (),
            shape=r"\.[A-Za-z0-9_\-]{6,7}\.[A-Za-z0-9_\-]{27}",
        ),
        PatternDetector(
            "discord-token",  # a webhook URL carries its token in the path
            r"discord(?:app)?\.com/api/webhooks/\d+/(?P<secret>[A-Za-z0-9_\-]{20,})",
            ("discord",),
        ),
        PatternDetector(
            "telegram-token",  # <bot id>:<35 characters>, alone or in an api.telegram.org/bot<token>/ URL
            r"(?<![\w:])(?:bot)?(?P<secret>\d{6,12}:[A-Za-z0-9_\-]{30,40})(?![\w-])",
            (),
            shape=r":[A-Za-z0-9_\-]{30}",
            valid=lambda value: _mixed_case(value.partition(":")[2]),
        ),
        PatternDetector(
            "service-token",  # other services whose tokens announce themselves by a prefix
            r"(?<![\w-])(?:"
            r"gl(?:dt|rt|ptt)-[A-Za-z0-9_\-]{20,}"
            r"|glsa_[A-Za-z0-9_]{32,}|glc_[A-Za-z0-9+/=_\-]{32,}"
            r"|do[opr]_v1_[a-f0-9]{64}"
            r"|ATATT3[A-Za-z0-9_\-=]{50,}"
            r"|PMAK-[a-f0-9]{24}-[a-f0-9]{34}"
            r"|tskey-(?:auth|api|client|webhook|scim)-[A-Za-z0-9_\-]{10,}"
            r"|gsk_[A-Za-z0-9]{48,}"
            r"|xai-[A-Za-z0-9]{60,}"
            r"|[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_\-=]{60,}"
            r"|shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}"  # Shopify
            r"|sq0(?:atp|csp)-[A-Za-z0-9_\-]{22,}|EAAA[A-Za-z0-9_\-]{56,}"  # Square
            r"|lin_(?:api|oauth)_[A-Za-z0-9]{40}"  # Linear
            r"|ntn_[A-Za-z0-9]{40,}|secret_(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Z])[A-Za-z0-9]{43}"  # Notion
            r"|NR(?:AK|JS|II)-[A-Za-z0-9]{19,32}"  # New Relic
            r"|AGE-SECRET-KEY-1[0-9A-Z]{58}"  # an age identity
            r")(?![\w-])",
            ("gldt-", "glrt-", "glptt-", "glsa_", "glc_", "_v1_", "atatt3", "pmak-", "tskey-", "gsk_", "xai-", ".atlasv1.",
             "shpat_", "shpss_", "shpca_", "shppa_", "sq0atp-", "sq0csp-", "eaaa", "lin_api_", "lin_oauth_", "ntn_",
             "secret_", "nrak-", "nrjs-", "nrii-", "age-secret-key-1"),
        ),
        PatternDetector(
            "service-token",  # Mailchimp: 32 hex digits and the data centre; "-us" is common, so the pattern is small
            r"(?<![\w-])[0-9a-f]{32}-us\d{1,2}(?![\w-])",
            (),
            shape=r"-us\d",
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
            "teams-webhook",  # a Microsoft Teams / Office 365 connector URL: whoever has it posts to the channel
            r"(?i:webhook\.office\.com/webhookb2|outlook\.office(?:365)?\.com/webhook)/(?P<secret>[A-Za-z0-9@/_\-]{20,})",
            ("webhook.office.com", "outlook.office"),
        ),
        PatternDetector(
            "recovery-key",  # BitLocker's recovery password: eight groups of six digits (manage-bde, a saved .txt)
            r"(?<![\w-])\d{6}(?:-\d{6}){7}(?![\w-])",
            (),
            shape=r"-\d{6}-\d{6}-\d{6}-",  # a literal first: the engine skips to each "-"
        ),
        PatternDetector(
            "jwt",  # header and claims are base64url JSON objects, so both start "ey" ("{" then '"' or space)
            rf"(?<![\w-])ey[IJA]{b64url}{{8,}}\.ey{b64url}{{8,}}\.{b64url}*=*(?![\w-])",
            (".ey",),
        ),
        PatternDetector(
            "aws-presigned-url",  # a pre-signed URL's signature and session token grant access until it expires
            r"(?i:X-Amz-(?:Signature|Security-Token))=(?P<secret>[A-Za-z0-9%+/=_\-]{16,})",
            ("x-amz-",),
        ),
        PatternDetector(
            "oauth-code",  # an OAuth authorization code in a redirect: it is exchanged for a token
            r"(?<![\w.\-])code=(?P<secret>[A-Za-z0-9._~+/%\-]{16,})(?=(?:&[^\s&]*)*&(?:state|session_state|scope)=)",
            ("code=",),
            valid=looks_random,
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


@functools.lru_cache(maxsize=32)
def _literal_index(literals_by_detector: tuple[tuple[str, ...], ...], extra_literals: tuple[str, ...],
                   ) -> tuple[tuple[str, ...], dict[str, tuple[int, ...]], tuple[str, ...]]:
    """The literals a pipeline searches, the detectors each one wakes, and the ASCII ones among them.

    A literal that contains another adds nothing: wherever "password" is, "pass" is too. So
    only the shortest literals are searched, each standing for every detector whose literal
    contains it (which may wake a detector needlessly, never miss one). Every pipeline of a
    run (the redaction's and the final check's copies) asks for the same index: it is built once.
    """
    literals = tuple(sorted({lit for group in literals_by_detector for lit in group} | set(extra_literals)))
    within = dict(zip(literals, literals_within(literals, literals)))  # each literal is within itself
    shortest = tuple(lit for lit in literals if within[lit] == {lit})
    woken: dict[str, list[int]] = {short: [] for short in shortest}
    for index, group in enumerate(literals_by_detector):
        for short in sorted(set().union(*(within[lit] for lit in group)).intersection(woken)):
            woken[short].append(index)
    by_literal = {short: tuple(detectors) for short, detectors in woken.items()}
    return shortest, by_literal, tuple(lit for lit in shortest if lit.isascii())


class _RecentStarts:
    """The line starts of the last long texts searched, for pipelines with the same triggers.

    A share searches most text twice with the same triggers: to scrub it, then in
    the final check, whose own pipeline reads the scrubbed file, which for most
    files holds exactly the text scrubbed. The answer depends on nothing but the
    text and the triggers, so the second search of identical text is looked up
    (compared in full, never by a digest alone). Bounded in characters kept.
    """

    MIN_CHARS = 4096
    MAX_CHARS = 4 << 20

    def __init__(self) -> None:
        self._starts: OrderedDict[tuple[str, tuple[str, ...], tuple[re.Pattern[str], ...]], list[int] | None] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def starts(self, text: str, literals: tuple[str, ...], patterns: tuple[re.Pattern[str], ...]) -> list[int] | None:
        key = (text, literals, patterns)
        with self._lock:
            if key in self._starts:
                found = self._starts[key]
                return None if found is None else list(found)
        found = line_starts(text, 0, literals, list(patterns))
        with self._lock:
            if key not in self._starts:
                self._starts[key] = None if found is None else list(found)
                self._chars += len(text)
                while self._chars > self.MAX_CHARS and self._starts:
                    (old, _, _), _ = self._starts.popitem(last=False)
                    self._chars -= len(old)
        return found


_RECENT_STARTS = _RecentStarts()


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
        self._ascii_literals: tuple[str, ...] = ()
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
        self._literals, self._by_literal, self._ascii_literals = _literal_index(
            tuple(tuple(t.literals) for t in triggers), tuple(self._extra_literals))
        self._by_pattern = [(i, t.pattern) for i, t in enumerate(triggers) if t.pattern is not None]
        self._patterns = [pattern for _, pattern in self._by_pattern]
        self._version = self.triggers_version

    def line_starts(self, text: str, pos: int = 0) -> list[int] | None:
        """Return where the lines of ``text[pos:]`` start that some detector may change (None: look at all)."""
        self._refresh()
        if pos or len(text) < _RecentStarts.MIN_CHARS:
            return line_starts(text, pos, self._literals, self._patterns)
        return _RECENT_STARTS.starts(text, self._literals, tuple(self._patterns))

    def apply(self, line: str, hit: Hit) -> str:
        """Run the detectors whose triggers fire, in pipeline order, over one line (without its line ending).

        A second pass over the output must judge as this one did, so what a detector
        writes counts as this pass goes on: a token or pseudonym that holds a later
        detector's trigger ("[REDACTED:bearer-token]") wakes that detector now, as it
        would on the second pass; and a detector that reads around pseudonyms
        (:attr:`reads_pseudonyms`) reads the line again once a later detector wrote
        one, since the second pass sees them in place from the start.

        What no ordering foresees (a value cut short beside a token, so that the token
        and what was left of the line read as a new value) is settled by running the
        detectors again over a changed line until it stays as it is: only lines that
        changed pay for it, and the output is what a second pass would leave alone.
        """
        self._refresh()
        # The detectors read a line as a person would: without terminal colours, with a JSON log's escaped letters
        # and a Mac's decomposed ones as the letters they are. A line they change that way goes out so (its escapes
        # kept); any other is read again as it came, and goes out as that reading leaves it.
        plain, unescaped = _as_read(line)
        if plain == line:
            return self._settle(line, hit)
        scrubbed = self._settle(plain, hit)
        if scrubbed == plain:
            return self._settle(line, hit)
        if unescaped:
            # Written back as they came: the file's encoding may have no such letters ("\\u043f" in a cp1252 file).
            scrubbed = "".join(f"\\u{ord(c):04x}" if c in unescaped else c for c in scrubbed)
        return scrubbed

    def _settle(self, line: str, hit: Hit) -> str:
        for _ in range(_SETTLE_PASSES):
            changed = self._apply_once(line, hit)
            if changed == line:
                break
            line = changed
        return line

    def _apply_once(self, line: str, hit: Hit) -> str:
        active = self._active(line)
        pending = sorted(active)
        ran_at: dict[int, int] = {}  # detector -> how many changes the line had had when it read it
        changes = 0
        k = 0
        while k < len(pending):
            i = pending[k]
            k += 1
            changed = self.detectors[i].apply(line, hit)
            if changed == line:
                ran_at[i] = changes
                continue
            line = changed
            changes += 1
            ran_at[i] = changes
            woken = {j for j in self._active(line) if j > i} - active
            if woken:
                active |= woken
                pending = pending[:k] + sorted({*pending[k:], *woken})
        for i, seen in ran_at.items():
            if seen < changes and getattr(self.detectors[i], "reads_pseudonyms", False):
                line = self.detectors[i].apply(line, hit)
        return line

    def _active(self, line: str) -> set[int]:
        """Return the detectors whose triggers fire on ``line``."""
        active: set[int] = set()
        by_literal = self._by_literal
        for literal in literals_in(line.lower(), self._literals, self._ascii_literals):
            active.update(by_literal[literal])
        for i, pattern in self._by_pattern:
            if pattern.search(line):
                active.add(i)
        return active


def build_pipeline(options: RedactionOptions, pseudonyms: PseudonymMap) -> Pipeline:
    """Return the detectors for ``options`` in the order they must run."""
    detectors: list[Detector] = _secret_formats()
    detectors += [
        UrlCredentials(pseudonyms, options.usernames),
        AuthorizationHeaders(),
        PatternDetector(
            "bearer-token",
            # A credential in parts joined by colons (user:token, key-id:secret) is one credential: all of it goes.
            r"(?i:\bbearer)[ \t]+(?P<secret>[A-Za-z0-9._~+/=\-]{12,}(?::[A-Za-z0-9._~+/=\-]+)*)",
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
        PasswordFlags(),
        ColonFiles(),
        XmlElements(),
        Assignments(),
        SpokenPasswords(),
        PasswordsNamedAfter(),
        CredentialPositions(),
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
