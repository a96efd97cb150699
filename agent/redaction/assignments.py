"""Find secrets written as a named setting and replace the value, keeping the name.

Covers ``key=value``, ``key: value``, ``key = "value"``, ``"key": "value"`` (JSON),
``'key' => 'value'``, ``export KEY=...``, ``set KEY=...``, command-line flags
(``--password=x``, ``--password x``, ``-Djavax.net.ssl.keyStorePassword=x``,
``-storepass x``), connection strings (``Password=a b;``), XML elements
(``<password>x</password>``) and a few well-known whitespace forms (.netrc,
redis ``requirepass``, ``netsh wlan`` "Key Content", ``curl -u user:pass``).
Whether a name holds a secret is decided by :func:`agent.redaction.keys.classify_key`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from agent.redaction import keys, words
from agent.redaction.pseudonyms import is_pseudonym
from agent.redaction.tokens import TOKEN_RE, Hit, is_redacted, token
from agent.redaction.triggers import Triggers
from agent.regexes import rx

KEYWORDS = (
    "pass", "pwd", "pw", "psw", "secret", "token", "key", "auth", "sess", "cookie", "cred", "psk",
    # "password" in other languages (see keys.PASSWORD_WORDS_WORLD): Kennwort, contraseña, пароль...
    "wort", "kennw", "contrase", "senha", "wachtwoord", "hasło", "haslo", "heslo", "senord", "salasana", "parol",
    "jelsz", "adgangskode", "ifre", "geslo", "lozinka", "парол", "סיסמ", "密码", "密碼", "パスワード", "비밀번호", "पासवर्ड",
    # "secret phrase", "WLAN-Schlüssel"
    "phrase", "schlüssel", "schluessel",
)  # fmt: skip
_KEYWORD = "(?:" + "|".join(KEYWORDS) + ")"

# A key is a word containing a keyword. It must start the line or follow a delimiter, so
# `/etc/passwd:` or `bypass=` never qualify; the optional sigil covers flags (-/--), shell
# and PHP variables ($) and @-names; a quoted key may be followed by `]` (`$cfg['password']`).
_KEYWORD_IN_LOWERED = rx(_KEYWORD)
_KEYWORD_IN_LINE = rx(_KEYWORD, re.I)
_KEY_DELIMITERS = frozenset(" \t,;:{([&?|'\"`<>=*")
_ASSIGN_AT = rx(
    r"(?P<sigil>--?|\$|@)?"
    r"(?P<kq>[\"'])?"
    r"(?P<key>\w[\w.\-\u0900-\u097f]*)"  # Devanagari's vowel signs are no \w: पासवर्ड
    r"(?(kq)(?P=kq)\]?)"
    r"(?P<sep>[ \t]*(?:=>|:=|=|->|:(?![:/\\])|,)[ \t]*|[ \t]+)"
)
# A quoted key may hold spaces: "Access Token": "x", 'encryption key' => 'x', "DB Password" = "x".
_QUOTED_SPACED_KEY = rx(
    r"(?P<sigil>)(?P<kq>[\"'])(?P<key>\w[\w.\-]*(?:[ \t][\w.\-]+){1,4})(?P=kq)\]?"
    r"(?P<sep>[ \t]*(?:=>|:=|=|:(?![:/\\]))[ \t]*)"
)
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _assignment_at_keyword(line: str, start: int, end: int) -> re.Match[str] | None:
    """Return the ``key <sep>`` match around the keyword at ``line[start:end]``, if the keyword is in a key."""
    word_start = start
    while word_start > 0 and (line[word_start - 1] in _KEY_CHARS or line[word_start - 1].isalnum()):
        word_start -= 1
    key_start = word_start
    while key_start < start and line[key_start] in ".-":
        key_start += 1  # leading dashes are the flag sigil, not part of the key
    sigil = line[word_start:key_start]
    if sigil not in ("", "-", "--"):
        return None
    candidates = [word_start]
    if not sigil:
        if word_start > 0 and line[word_start - 1] in "\"'":
            candidates.insert(0, word_start - 1)  # a quoted key: "password": ...
        if word_start > 0 and line[word_start - 1] in "$@":
            candidates.insert(0, word_start - 1)
    spaced: re.Match[str] | None = None  # "pass word" in `{"pass word": "x"}` is a key, not prose
    for p in candidates:
        if p > 0 and line[p - 1] not in _KEY_DELIMITERS:
            continue
        m = _ASSIGN_AT.match(line, p)
        if m is not None and m.start("key") == key_start and m.end("key") >= end:
            if sigil or m.group("sep").strip():
                return m
            spaced = m
            break
    if not sigil:
        # A quoted key with spaces: the quote that opens it is the last one before the keyword.
        quote = max(line.rfind('"', max(0, word_start - 48), word_start), line.rfind("'", max(0, word_start - 48), word_start))
        if quote != -1 and (quote == 0 or line[quote - 1] in _KEY_DELIMITERS):
            m = _QUOTED_SPACED_KEY.match(line, quote)
            if m is not None and m.end("key") >= end:
                return m
    return spaced


# Words that cannot be part of a label before a key word: a sentence or a status ("Failed password: x",
# "cannot read password: file not found").
LABEL_STOP = frozenset(
    """
    the a an to for of with from in on at by is was are be no not and or my your his her our their this that
    error failed failure invalid wrong cannot can could will would should set get read reading write empty
    missing bad new old current using use enter entered type typed check verify reset change wrong
    """.split()
)


def _label_starts(line: str, key_start: int) -> list[int]:
    """Where labels of one, two or three words before the key at ``key_start`` start (nearest first):
    ``router admin password``, ``Security key``, ``WLAN-Schlüssel``."""
    starts: list[int] = []
    pos = key_start
    for _ in range(3):
        if pos < 2 or line[pos - 1] not in " \t" or line[pos - 2] in " \t":
            break
        end = pos - 1
        begin = end
        while begin > 0 and (line[begin - 1].isalnum() or line[begin - 1] in "_-"):
            begin -= 1
        word = line[begin:end].lower()
        if not word or not word[0].isalpha() or word in LABEL_STOP or word in _NOT_SECRET_WORDS \
                or (word.endswith(("ing", "ed")) and "-" not in word):  # "pre-shared key" is a label
            break
        starts.append(begin)
        pos = begin
    return starts


# A quoted key written with JSON escapes ("pass\u0077ord", "contrase\u00f1a", "\u043f\u0430…"): judged by
# the name it decodes to. The escapes a JSON encoder writes for non-ASCII letters are in every such key.
_ESCAPE = rx(r"\\u[0-9a-fA-F]{4}")
_ESCAPED_KEY = rx(
    r"(?P<sigil>)(?P<kq>[\"'])(?P<key>(?:[^\"'\\\s]|\\u[0-9a-fA-F]{4}){1,120})(?P=kq)(?P<sep>[ \t]*:[ \t]*)"
)


# A command's argument list as JSON or Python: ["mysql", "--password", "x"].
_ARGV_PAIR = rx(
    r"(?P<q>[\"'])(?:--?|/)(?P<key>[\w.\-]+)(?P=q)[ \t]*,[ \t]*(?P<vq>[\"'])(?P<value>(?!-)(?:[^\"'\\]|\\.)+)(?P=vq)"
)


# What may stand before a key for the line to be a config line (value runs to end of line):
# indentation, a comment marker (commented-out secrets are still secrets), a shell builtin,
# or a YAML list dash.
_CONFIG_PREFIX = rx(
    r"[ \t]*(?:(?:#+|;+|//|--|\*|REM[ \t])[ \t]*)?"
    r"(?:(?:export|set|setx|declare(?:[ \t]+-\w+)*|local|readonly|typeset|env)[ \t]+)?"
    r"(?:-[ \t]+)?",
    re.I,
)
# The header a log line starts with, as several tools write it: a timestamp, a date or time, a syslog host and
# program[pid]:, a level (INFO, <info>, local.DEBUG:), a [tag] or a logger name, each followed by spaces. A
# setting after such a header is the line's message, as a setting at the start of a config line is.
_HEADER_TOKEN = (
    r"(?:\d[\d:.,/+\-TZ]*(?:[ \t]+[A-Za-z][\w.\-]*(?=[ \t]+[\w.\-/@]+(?:\[\d+\])?:))?"  # 2026-12-01T10:00:00 host
    r"|[IWEF]\d{4}"  # I1201: a level and a date in one
    r"|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|mon|tue|wed|thu|fri|sat|sun)[a-z]*,?|[ap]m"
    r"|(?:info|debug|notice|warn(?:ing)?|err(?:or)?|crit(?:ical)?|trace|fatal|verbose|alert|emerg|dbg|inf|wrn):?"
    r"|\[[^\]\n]{0,80}\]:?|<[^<>\n]{0,40}>:?|\([^()\n]{0,40}\):?"
    r"|[\w.\-/@]+(?:\[\d+\])?:(?:\d+\])?"  # app[123]:, kernel:, local.DEBUG:, setup.go:42]
    r"|[a-z][\w$]*(?:\.[\w$]+)+"  # a logger's name: c.e.Setup
    r"|-{1,2}|\||>|»)"
)
_BRACKETED = r"(?:\[[^\]\n]{0,80}\]|<[^<>\n]{0,40}>|\([^()\n]{0,40}\)):?"
# Tokens are apart by spaces (a bracketed one may touch what follows: "<7>psk=…"), so a run of digits or words
# splits into tokens one way only.
LOG_HEADER = rf"(?:{_HEADER_TOKEN}[ \t]+|{_BRACKETED}[ \t]*)+"
# A word or two may tell which one: "INFO new psk: …", "[wifi] the guest password = …".
_WHICH = r"(?:(?:new|old|current|default|initial|temporary|temp|guest|admin|root|my|your|the)[ \t]+){0,2}"
_AFTER_LOG_HEADER = rx(rf"[ \t]*{LOG_HEADER}" + _CONFIG_PREFIX.pattern + _WHICH, re.I)
_ANOTHER_ASSIGNMENT = rx(r"[ \t][\w.\-]+=")
_CONNECTION_STRING = rx(r";[ \t]*[\w .\-]+=")
# The key after a ";" that ends a value: words of letters ("Database", "User ID", "Initial Catalog"); a random
# value's own ";" is rarely followed by letters only up to a "=".
_NEXT_CONNECTION_KEY = rx(r";[ \t]*[A-Za-z][A-Za-z_ .\-]*=")
# A value in a URL query ends at "&" that starts the next parameter; elsewhere "&" is part of it.
# A quote or an angle bracket inside the value belongs to it (`password=z"JUt<k`); one before a space, a
# separator or a closing bracket ends it (`"url": "x?token=abc", …`, `href="?token=abc">`).
_MID_VALUE = rx(r"(?:[^\s&\"'<>]|&(?![\w.\-]+=)|[\"'<>](?=[^\s\"'<>,;)\]}]))+")
_CUT_AT_NEXT_PAIR = rx(r"[,;][ \t]*[A-Za-z_][\w.\-]*[=:]")
_NEXT_SETTING = rx(r"([\w.\-]+)[ \t]*(?:=|:(?![:/\\]))")
# A value that may hold spaces: plain words (no quotes, brackets, other settings or separators).
_SPACED_VALUE = rx(r"[^\s\"'`<>{}\[\]=,;&|]+(?:[ \t]+[^\s\"'`<>{}\[\]=,;&|]+){1,9}\s*")
#: An ODBC value in braces: no quote, colon or brace inside but "}}" (a "}"), up to the closing "}".
_ODBC_BRACED = rx(r"\{((?:[^{}\"':\n]|\}\})+)\}(?!\})")
#: `{password}`, `{db_pass}`: a template's placeholder, not a value.
_PLACEHOLDER = rx(r"[a-z_][a-z0-9_]*|[A-Z_][A-Z0-9_]*|\d+")
_JSON_BARE_VALUE = rx(r"[^,}\]\s]+")
_QUOTED = rx(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")

# Values that are not secrets: booleans, nulls, masks, placeholders, status words
# ("Invalid token: expired"), variable references and YAML block indicators.
_NOT_SECRET_WORDS = frozenset(
    """
    true false yes no on off null nil none undefined ~ (null) <none> n/a na - -- ---
    expired invalid missing required empty incorrect wrong mismatch changed updated accepted
    rejected denied failed failure ok unknown revoked malformed absent present set unset not
    valid ignored disabled enabled refreshed granted pending unavailable error success
    successful removed created deleted saved stored cleared found reset locked unlocked
    timeout verified unverified hidden redacted omitted masked optional supplied provided
    unauthorized unauthenticated forbidden refused unsupported unrecognized unrecognised exceeded
    mismatched used unused consumed issued renewed rotated
    """.split()
)
# A file's absolute (or home) path: where a setting named "credentials" or "secret" points to its file, not the
# secret. Passwords are not judged so: "/" is a character some people put in one.
_FILE_PATH = rx(r"(?:~?/|[A-Za-z]:[\\/])[\w.@+\-]+(?:[\\/][\w.@+\-]+)*[\\/]?")


def _names_a_file(value: str) -> bool:
    """Whether ``value`` is a file's path whose names are words, not a secret that starts with "/"."""
    if not _FILE_PATH.fullmatch(value):
        return False
    from agent.redaction.credentials import looks_random  # that module builds on this one

    return not any(looks_random(name) for name in re.split(r"[\\/]", value) if name)


# The name of an authentication or key-management method, the value of "auth:", "link auth:", "key-mgmt=" or
# "Authentication :" in network and service settings: never the secret itself.
_METHOD_WORDS = frozenset(
    """
    wpa-psk wpa2-psk wpa3-psk wpa-eap wpa2-eap wpa3-eap wpa-eap-suite-b-192 wpa3-sae sae owe wep open shared
    wpa-personal wpa2-personal wpa3-personal wpa-enterprise wpa2-enterprise wpa3-enterprise ieee8021x 802.1x
    basic digest ntlm negotiate kerberos gssapi spnego scram-sha-1 scram-sha-256 md5 trust peer ident pam
    """.split()
)
# Words that start a sentence or a status, not a pass-phrase ("password: changed for alex", "psk: is too short").
_PROSE_START = (
    frozenset(
        """
        please see was were has have had been must should too will does did do may might contains now only still
        already cannot can't isn't wasn't length at least
        """.split()
    )
    | LABEL_STOP
    | _NOT_SECRET_WORDS
) - {"my", "your", "our", "their", "his", "her"}
# dpkg's multiarch qualifier: `libsecret-1-0:amd64` names a package, not a secret.
_ARCHITECTURES = frozenset(
    "amd64 arm64 i386 i686 armhf armel all any x86_64 aarch64 noarch ppc64el ppc64le s390x riscv64 mips64el".split()
)
_REFERENCE = rx(
    r"\$\{[^}\s]+\}|\$[A-Z_][A-Z0-9_]*|%[A-Za-z_][A-Za-z0-9_]*%|\{\{[^{}]*\}\}|<[^<>]*>"
    # code that reads the value from the environment: os.environ['X'], os.getenv("X"), process.env.X, ENV["X"]
    r"|(?:[\w$]+\.)*(?:environ|getenv|env|ENV|GetEnvironmentVariable)"
    r"(?:\[[\"']?\w+[\"']?\]|\([\"']\w+[\"'](?:,[^)\n]*)?\)|\.[A-Za-z_]\w*);?"
    r"|[*•xX#]{3,}|[|>][-+0-9]*|!\S+[ \t]+[|>][-+0-9]*"
)
# The `passwd` program and nsswitch.conf both print "passwd: ..." without any secret.
NSS_SOURCES = frozenset(
    "files systemd sss ldap nis nisplus compat winbind db dns mdns4_minimal myhostname resolve "
    "mymachines hesiod cache extrausers google_oslogin".split()
)
_EOL_KINDS = frozenset({keys.COOKIE})


def _closing_quote(line: str, start: int, quote: str) -> int:
    """Return the index of the quote that closes a string opened just before ``start``, or -1."""
    i = start
    escapes = quote != "'"  # shell and YAML single quotes have no backslash escapes
    while i < len(line):
        c = line[i]
        if c == "\\" and escapes:
            i += 2
            continue
        if c == quote:
            return i
        i += 1
    return -1


def _closing_bracket(line: str, start: int) -> int:
    """Return the index of the ``]`` closing the ``[`` at ``start`` (ignoring brackets inside quotes), or -1."""
    depth = 0
    quote = ""
    for i in range(start, len(line)):
        c = line[i]
        if quote:
            if c == quote and line[i - 1] != "\\":
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                return i
    return -1


_FLAG_WORD = rx(r"[^\s\"'`]\S*")
_NEXT_QUERY_PAIR = rx(r"&[\w.\-]+=")


def _strip_unbalanced(value: str) -> str:
    """Drop trailing separators and closing brackets that belong to the surrounding text."""
    while value and value[-1] in ",;)]}":
        opener = {")": "(", "]": "[", "}": "{"}.get(value[-1])
        if opener and value.count(opener) >= value.count(value[-1]):
            break
        value = value[:-1]
    return value


_COLOUR_CODES = rx(r"(?:\x1b\[[0-9;:]*m)+")
_ESCAPED_WORD = rx(r"[A-Za-z]*(?:\\u[0-9a-fA-F]{4}[A-Za-z]*)+")
_PLAIN_WORD = rx(r"[a-z]+(?:-[a-z]+)*(?![^\s,;.)])")
# The end of a Markdown emphasis that holds a setting's name and its colon, before the value.
_EMPHASIS_CLOSE = rx(r"(?:\*\*|__|\*|_)[ \t]+(?=\S)")


def spaced_to_end(sep: str, rest: str) -> bool:
    """``... password = correct horse battery staple``: a separator with spaces around it, then nothing but
    a few plain words to the end of the line, is a value with spaces (not a value and more log text)."""
    if not (sep.startswith((" ", "\t")) and sep.endswith((" ", "\t")) and sep.strip() in ("=", ":", "：")):
        return False
    if _SPACED_VALUE.fullmatch(rest) is None:
        return False
    return rest.split(None, 1)[0].lower() not in _NOT_SECRET_WORDS


# What a pass-phrase is kept as: a password, a network's key, a secret ("secret phrase"); never a token or a cookie.
_PHRASE_KINDS = frozenset({keys.PASSWORD, keys.API_KEY, keys.SECRET})


def _phrase_to_end(rest: str) -> bool:
    """Whether ``rest`` (what follows a setting's separator behind a log header) is a pass-phrase: a few plain
    words to the end of the line, the first of which does not start a sentence or a status."""
    if _SPACED_VALUE.fullmatch(rest) is None or _ANOTHER_ASSIGNMENT.search(rest):
        return False
    return rest.split(None, 1)[0].lower().rstrip(".,:;!?") not in _PROSE_START


def looks_like_prose(value: str, following: str) -> bool:
    """True for "Invalid token: signature mismatch" or "authorization: denied": a lower-case word that
    is a status or is followed by more words, rather than a credential."""
    word = value.split(None, 1)[0] if value.strip() else ""
    if not word.isalpha() or not word.islower():
        return False
    return word in _NOT_SECRET_WORDS or (len(following) >= 2 and following[0] == " " and following[1].isalpha())


def is_not_secret(value: str) -> bool:
    """Return True for values that cannot be secrets (empty, boolean, placeholder, reference, a token)."""
    v = value.strip()
    if not v or is_redacted(v):
        return True
    lowered = v.lower()
    if lowered in _NOT_SECRET_WORDS or lowered in _METHOD_WORDS:
        return True
    if is_pseudonym(v.rstrip("=:;,.")):
        return True  # what the first pass put for an address or a name, read again: redacting twice changes nothing
    # A word a JSON encoder escaped ("\\u043e\\u0442"): the detectors read it unescaped too, as the word it is.
    # A terminal's colour code ("password:\x1b[0m required") is no value either.
    return (_REFERENCE.fullmatch(v) is not None or _ESCAPED_WORD.fullmatch(v.rstrip(".,;:")) is not None
            or _COLOUR_CODES.fullmatch(v) is not None)


class Assignments:
    """Secrets in ``name <separator> value`` form, in every quoting and separator style."""

    names = (
        keys.PASSWORD,
        keys.SECRET,
        keys.TOKEN,
        keys.API_KEY,
        keys.PRIVATE_KEY,
        keys.AWS_SECRET_KEY,
        keys.AZURE_CLIENT_SECRET,
        keys.COOKIE,
        keys.SESSION,
    )

    def triggers(self) -> Triggers:
        return Triggers(KEYWORDS, _ESCAPE)

    def apply(self, line: str, hit: Hit) -> str:
        if '",' in line or "'," in line:
            line = self._argv_pairs(line, hit)
        if "\\u" in line:
            line = self._escaped_keys(line, hit)
        out: list[str] = []
        done = 0  # line[:done] is already in out
        pos = 0
        lowered = line.lower()
        # Searching the lower-cased line is much faster than a case-insensitive search, but only
        # valid while lower-casing keeps every offset (a few Unicode letters grow).
        keywords = (
            _KEYWORD_IN_LOWERED.finditer(lowered) if len(lowered) == len(line) else _KEYWORD_IN_LINE.finditer(line)
        )
        for keyword in keywords:
            if keyword.start() < pos:
                continue
            m = _assignment_at_keyword(line, keyword.start(), keyword.end())
            # A quoted key with spaces starts before a word of it that was looked at already.
            if m is None or m.start() < done or (m.start() < pos and m.re is not _QUOTED_SPACED_KEY):
                continue
            pos = m.end()
            sep = m.group("sep")
            sigil = m.group("sigil") or ""
            flag = sigil.startswith("-")
            whitespace_sep = not sep.strip()
            if whitespace_sep and not flag:
                pos = m.end("key")  # "Failed password for ..." is prose, not a setting
                continue
            if sep.strip() == "," and not self._call_argument(line, m):
                pos = m.end("key")
                continue
            kind = keys.classify_key(m.group("key"))
            labelled = logged = False
            if not whitespace_sep and not sigil and not m.group("kq"):
                for label_start in _label_starts(line, m.start()):
                    if kind is None:
                        kind = keys.classify_key(line[label_start : m.end("key")])
                        if kind is None:
                            continue
                    if _CONFIG_PREFIX.fullmatch(line, 0, label_start) is not None:
                        labelled = True
                        break
                    if _AFTER_LOG_HEADER.fullmatch(line, 0, label_start) is not None:
                        logged = True  # "[wifi] WPA key: …"
                        break
            if kind is None:
                continue  # keep scanning after the separator: `--from-literal=password=x`
            span = self._value_span(line, m, kind, flag=flag, whitespace_sep=whitespace_sep, labelled=labelled,
                                    logged=logged)
            if span is None:
                continue
            start, end, replacement = span
            if kind == keys.SECRET and _names_a_file(line[start:end]):
                continue  # mount.cifs' credentials=/root/.smbcredentials, GOOGLE_APPLICATION_CREDENTIALS=~/key.json
            value = line[start:end]
            if is_redacted(value.strip("\"'")) or replacement(kind) == value:
                continue  # `pwd: ['[REDACTED:password]'x`: only an earlier pass's tokens, counted then
            out.append(line[done:start])
            out.append(replacement(kind))
            hit(kind)
            done = pos = end
        if not out:
            return line
        out.append(line[done:])
        return "".join(out)

    @staticmethod
    def _argv_pairs(line: str, hit: Hit) -> str:
        """``"--password", "x"`` in an argument list: the flag names a secret, the next argument is its value."""

        def replace(m: re.Match[str]) -> str:
            kind = keys.classify_key(m.group("key"))
            value = m.group("value")
            if kind is None or value.startswith("-") or is_not_secret(value):
                return m.group(0)
            hit(kind)
            s, e = m.span("value")
            return m.group(0)[: s - m.start()] + token(kind) + m.group(0)[e - m.start() :]

        return _ARGV_PAIR.sub(replace, line)

    def _escaped_keys(self, line: str, hit: Hit) -> str:
        """``{"pass\\u0077ord": "x"}``: a quoted key with JSON escapes whose decoded name is a secret's."""
        out: list[str] = []
        done = 0
        for m in _ESCAPED_KEY.finditer(line):
            if m.start() < done or "\\u" not in m.group("key"):
                continue
            kind = keys.classify_key(json.loads('"' + m.group("key") + '"'))
            if kind is None:
                continue
            span = self._value_span(line, m, kind, flag=False, whitespace_sep=False)
            if span is None:
                continue
            start, end, replacement = span
            out.append(line[done:start])
            out.append(replacement(kind))
            hit(kind)
            done = end
        if not out:
            return line
        out.append(line[done:])
        return "".join(out)

    @staticmethod
    def _call_argument(line: str, m: re.Match[str]) -> bool:
        """``setenv("DB_PASSWORD", "x")``: a quoted name and a quoted value as arguments of a call."""
        before = line[: m.start()]
        return (
            bool(m.group("kq")) and line[m.end() : m.end() + 1] in ("'", '"') and before.count("(") > before.count(")")
        )

    def _value_span(
        self, line: str, m: re.Match[str], kind: str, *, flag: bool, whitespace_sep: bool, labelled: bool = False,
        logged: bool = False,
    ) -> tuple[int, int, Callable[[str], str]] | None:
        """Return (start, end, make_replacement) for the value after ``m``, or None if it is not a secret."""
        vstart = m.end()
        emphasis = _EMPHASIS_CLOSE.match(line, vstart) if line.startswith(("*", "_"), vstart) else None
        if emphasis is not None:
            vstart = emphasis.end()  # Markdown: "**DB Password:** X", "_token_: X"
        if vstart >= len(line) or TOKEN_RE.match(line, vstart):
            return None  # nothing, or already replaced by a more specific detector
        key = m.group("key")
        sep = m.group("sep").strip()
        first = line[vstart]
        if sep in ("->", "=>") and keys.container_kind(key) is None and _PLAIN_WORD.match(line, vstart):
            return None  # a state that changes ("need-auth -> prepare"), not a weakly named token's value
        if line.startswith(('"""', "'''"), vstart):
            close = line.find(line[vstart : vstart + 3], vstart + 3)
            end = close if close != -1 else len(line.rstrip())
            if is_not_secret(line[vstart + 3 : end]):
                return None
            return vstart + 3, end, token
        if line.startswith('\\"', vstart):
            # An escaped quote inside a JSON string: "--password=\\"x\\"".
            close = line.find('\\"', vstart + 2)
            end = close if close != -1 else len(line.rstrip())
            return None if is_not_secret(line[vstart + 2 : end]) else (vstart + 2, end, token)
        if first in "\"'`":
            close = _closing_quote(line, vstart + 1, first)
            end = close if close != -1 else len(line.rstrip())
            if is_not_secret(line[vstart + 1 : end]):
                return None
            return vstart + 1, end, token
        if first == "{":
            # ODBC quotes a value in braces (`Pwd={a;b}`, "}}" for a "}" inside); anything else in braces is a
            # nested object, whose own keys are found separately, or a placeholder (`{password}`).
            braced = _ODBC_BRACED.match(line, vstart) if sep == "=" else None
            if braced is not None:
                if _PLACEHOLDER.fullmatch(braced.group(1)) or is_not_secret(braced.group(1)):
                    return None
                return vstart + 1, braced.end() - 1, token
            rest = line[vstart + 1 :].strip()
            if not rest or "}" in rest or any(c in rest for c in "\"'") or ": " in rest or ", " in rest:
                return None  # an object, also one that goes on on the next lines
            # A "{" that nothing closes and that holds no key starts no object: in `password = {a:b` it is the
            # value's first character.
        if first == "[":
            return self._list_span(line, vstart)
        if whitespace_sep:
            word = line[vstart:].split(None, 1)[0]
            if word.startswith("-") or is_not_secret(word) or not re.search(r"\w", word):
                return None  # `--password -h db`, `--with-token <<< ...`: no value follows the flag
            return vstart, vstart + len(word), token
        config_line = not flag and sep != "->" and (labelled or _CONFIG_PREFIX.fullmatch(line, 0, m.start()) is not None)
        rest = line[vstart:]
        opener = line[m.start() - 1] if m.start() > 0 and not m.group("kq") and not m.group("sigil") else ""
        if sep == ":" and not m.group("sep").endswith((" ", "\t")) and self._tight_colon_label(line, m, vstart):
            return None
        if opener in ("'", '"'):
            # `echo "password: a b c"`: the value runs to the end of the string that starts with the key.
            close = line.find(opener, vstart)
            end = close if close != -1 else len(line.rstrip())
            if end > vstart and line[end - 1] == "\\" and opener == '"':
                end -= 1  # an escaped quote inside JSON: keep the backslash
            value = line[vstart:end]
            return None if is_not_secret(value) else (vstart, end, token)
        if kind in _EOL_KINDS:
            value = rest.rstrip()
        elif m.group("kq") == '"':
            bare = _JSON_BARE_VALUE.match(rest)
            value = bare.group(0) if bare else ""
            if is_not_secret(value):
                return None
            return vstart, vstart + len(value), lambda k: f'"{token(k)}"'  # keep JSON valid
        elif config_line and not _ANOTHER_ASSIGNMENT.search(rest):
            value = rest.rstrip()  # `password = correct horse battery staple`
            if labelled and rest.split(None, 1)[0].lower() in LABEL_STOP | _NOT_SECRET_WORDS:
                return None  # "router admin password: not set"
        elif (not config_line and not flag and sep != "->" and kind in _PHRASE_KINDS
              and (logged or _AFTER_LOG_HEADER.fullmatch(line, 0, m.start()) is not None)
              and _phrase_to_end(rest)):
            value = rest.rstrip()  # `Dec  1 10:00:00 host wpa_supplicant[12]: psk: correct horse battery staple`
        elif self._names_the_next_setting(rest):
            return None  # `wifi psk: password = ...`: the setting named next holds the value
        elif spaced_to_end(m.group("sep"), rest):
            value = _strip_unbalanced(rest.rstrip())  # `wifi: password = correct horse battery staple`
        elif flag and sep == "=" and _FLAG_WORD.match(rest):
            # `--password=a>b'c`: a command-line argument is one word, whatever it holds (a quote or bracket at its
            # end that nothing opened belongs to the text around it).
            value = _FLAG_WORD.match(rest).group(0)  # type: ignore[union-attr]
            value = value[: m2.start()] if (m2 := _NEXT_QUERY_PAIR.search(value)) else value
            while value:
                trimmed = _strip_unbalanced(value)
                if trimmed and trimmed[-1] in "\"'`" and trimmed.count(trimmed[-1]) % 2:
                    trimmed = trimmed[:-1]
                if trimmed == value:
                    break
                value = trimmed
        else:
            value = self._mid_line_value(line, vstart, m)
            if value is None:
                return None
        if key.lower() == "passwd" and sep == ":" and (" " in value or value in NSS_SOURCES):
            return None  # "passwd: password updated successfully", nsswitch.conf
        if is_not_secret(value):
            return None
        if not config_line and sep in (":", "->") and looks_like_prose(value, line[vstart + len(value) :]):
            return None
        return vstart, vstart + len(value), token

    @staticmethod
    def _names_the_next_setting(rest: str) -> bool:
        """``psk: password = x``: the word after the separator is itself a secret's name with a separator."""
        m = _NEXT_SETTING.match(rest)
        return m is not None and keys.classify_key(m.group(1)) is not None

    @staticmethod
    def _tight_colon_label(line: str, m: re.Match[str], vstart: int) -> bool:
        """``libsecret-1-0:amd64`` and PAM's ``(gdm-password:session)`` are labels, not settings."""
        word = re.match(r"[\w\-]+", line[vstart:])
        if word is None:
            return False
        if word.group(0) in _ARCHITECTURES:
            return True
        closes = line[vstart + word.end() : vstart + word.end() + 1] == ")"
        return closes and m.start() > 0 and line[m.start() - 1] == "(" and word.group(0).islower()

    @staticmethod
    def _mid_line_value(line: str, vstart: int, m: re.Match[str]) -> str | None:
        """Return the value of a setting in the middle of a line (log, command line, URL query)."""
        rest = line[vstart:]
        # Connection strings separate pairs with ';' and allow spaces in values: `Password=a b;`. The ';' that
        # ends the value is one a setting follows: in `password=a;b c=d` the first is the value's own.
        if ";" in rest and _CONNECTION_STRING.search(line):
            following = _NEXT_CONNECTION_KEY.search(rest)
            semi = following.start() if following else -1
            if semi > 0 and "=" not in rest[:semi]:
                return rest[:semi].rstrip()
        mv = _MID_VALUE.match(rest)
        if mv is None:
            return None
        value = mv.group(0)
        cut = _CUT_AT_NEXT_PAIR.search(value)
        if cut:
            value = value[: cut.start()]
        return _strip_unbalanced(value) or None

    @staticmethod
    def _list_span(line: str, vstart: int) -> tuple[int, int, Callable[[str], str]] | None:
        """Secrets given as a list (``tokens: ["a", "b"]``): replace every element, keep the brackets."""
        close = _closing_bracket(line, vstart)
        end = close if close != -1 else len(line.rstrip())
        inner = line[vstart + 1 : end]
        if is_not_secret(inner.strip().rstrip(",")):
            return None
        if _QUOTED.search(inner):

            def replace_strings(kind: str) -> str:
                return _QUOTED.sub(lambda q: q.group(0)[0] + token(kind) + q.group(0)[0], inner)

            return vstart + 1, end, replace_strings
        return vstart + 1, end, token


_XML_ELEMENT = rx(
    rf"<(?P<tag>[\w:.\-]*?{_KEYWORD}[\w:.\-]*)(?:\s[^>]*)?>(?:\s*<Value>)?(?P<value>[^<]+)",
    re.I,
)
# .NET appSettings and similar: <add key="SmtpPassword" value="..." />
_XML_KEY_VALUE = rx(
    r"(?i)\b(?:key|name)=(?P<kq>[\"'])(?P<tag>[^\"']+)(?P=kq)[ \t]+value=(?P<vq>[\"'])(?P<value>(?:(?!(?P=vq))[^\n])*)(?P=vq)"
)


class XmlElements:
    """Secrets as XML element text: ``<password>x</password>``, unattend.xml ``<Password><Value>x``."""

    names = Assignments.names

    def triggers(self) -> Triggers:
        return Triggers(KEYWORDS)  # a tag or key="..." attribute must name a secret

    def apply(self, line: str, hit: Hit) -> str:
        def replace(m: re.Match[str]) -> str:
            kind = keys.classify_key(m.group("tag"))
            if kind is None or is_not_secret(m.group("value")):
                return m.group(0)
            hit(kind)
            s, e = m.span("value")
            return m.group(0)[: s - m.start()] + token(kind) + m.group(0)[e - m.start() :]

        if "<" not in line:
            return line
        return _XML_KEY_VALUE.sub(replace, _XML_ELEMENT.sub(replace, line))


# Whitespace-separated forms that are secrets only in these well-known places. Each has a
# `value` group; a `key` group, if present, must name a secret (see keys.classify_key).
_NETRC_LINE = rx(r"(?i)(?:^|\s)(?:machine|default)(?:\s|$)")
_NETRC_PASSWORD = rx(r"(?i)(?<!\S)(?:password|passwd)[ \t]+(?P<value>(?![=:](?:\s|$))\S+)")
# A bare word goes on past a quote inside it ("-p X'Y"), not past one at its end.
_QUOTED_OR_WORD = r"(?P<q>[\"'])?(?P<value>(?(q)[^\"']*|[^\s\"']+(?:[\"']+[^\s\"']+)*))"
# A directive of a space-separated config file and its value: "bindpw X" (ldap.conf, nslcd.conf), "rootpw X"
# (slapd.conf), "smtp_pass X", "AuthPass X". The name is glued of several words (a bare "password changed" is a
# sentence) and must name a password (see SpecialForms.apply); it starts the line (a log line's message is not a
# config file's), and the value is the rest of the line: one word, or a quoted string.
_DIRECTIVE = rx(
    r"^[ \t]*(?P<key>[A-Za-z][A-Za-z0-9]*(?:[_.\-][A-Za-z0-9]+)+|[A-Z]?[a-z0-9]+(?:[A-Z][a-z0-9]+)+"
    r"|[a-z]+(?:pw|pass|passwd|authtok))[ \t]+(?P<q>[\"'])?(?P<value>(?(q)[^\"'\n]+|[^\s\"'=:]\S*))(?(q)[\"'])[ \t]*$"
)
# An ODBC connection string's password in braces: "Uid=sa;Pwd={a;b}}c}" (a "}" is written "}}").
_ODBC_PASSWORD = rx(r"(?i)(?:^|[;\"'])[ \t]*(?:pwd|password|pass)[ \t]*=[ \t]*\{(?P<value>(?:[^{}\n]|\}\})+)\}(?!\})")
# A flag starts an argument of a shell line or of a JSON argument list; its value follows after a space or "=", or
# as the list's next string.
_FLAG_START = r"(?<![^\s\"'\[,])"
_FLAG_GAP = r"(?:[ \t=]*[\"']?|[\"'],[ \t]*[\"'])"
# (literals, pattern): the pattern only runs on lines that contain one of the literals (lower case).
_SPECIAL: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    # Debian /etc/network/interfaces: "wpa-psk correct horse battery staple", "wireless-key s:abcde"
    (
        ("wpa-psk", "wpa-passphrase", "wireless-key"),
        rx(rf"(?i)^(?:{LOG_HEADER})?[ \t]*(?:wpa-psk|wpa-passphrase|wireless-key\d?)(?:[ \t]*[=:][ \t]*|[ \t]+)(?P<value>\S.*?)[ \t]*$"),
    ),
    # redis.conf / sentinel: requirepass hunter2, masterauth hunter2
    (("requirepass", "masterauth"), rx(r"(?i)^[ \t]*(?:requirepass|masterauth)[ \t]+(?P<value>\S.*?)[ \t]*$")),
    # a continuation line of ~/.netrc: "  password hunter2"
    (("pass",), rx(r"(?i)^[ \t]+(?:password|passwd)[ \t]+(?P<value>[^\s=:]\S*)[ \t]*$")),
    # netsh wlan show profile key=clear: "Key Content            : MyWifiPass", in Windows' languages
    (
        words.KEY_CONTENT_TRIGGERS,
        rx(rf"(?i)(?<![^\W_])(?:{words.KEY_CONTENT_LABELS})[ \t]*:[ \t]*(?P<value>\S.*?)[ \t]*$"),
    ),
    # sshpass -p secret ssh ...
    (("sshpass",), rx(rf"(?i)\bsshpass[ \t]+-p[ \t]*{_QUOTED_OR_WORD}")),
    # docker login -u user -p secret registry
    (("docker",), rx(rf"(?i)\bdocker[ \t]+login\b.*?(?<!\S)-p[ \t]+{_QUOTED_OR_WORD}")),
    # htpasswd -b[c] file user password
    (
        ("htpasswd",),
        rx(
            r"\bhtpasswd(?:[ \t]+-\w+)*?[ \t]+-[a-zA-Z]*b[a-zA-Z]*(?:[ \t]+-\w+)*[ \t]+\S+[ \t]+\S+[ \t]+(?P<value>\S+)"
        ),
    ),
    # curl -u user:pass, --user, --proxy-user; in a shell line or a JSON argument list ("-u", "user:pass")
    (
        (" -u", "\t-u", "\"-u", "--user", "--proxy-user"),
        rx(rf"{_FLAG_START}(?:-u|-U|--user|--proxy-user){_FLAG_GAP}[^\s:\"'@\[%]+:(?P<value>[^\s\"']+)"),
    ),
    # smbclient -U user%pass
    ((" -u", "\t-u", "\"-u", "--user"), rx(rf"{_FLAG_START}(?:-U|--user){_FLAG_GAP}[^\s%\"']+%(?P<value>[^\s\"']+)")),
    # transmission-remote -n user:pass, --auth user:pass
    (
        ("transmission",),
        rx(rf"transmission-\w+\b[^\n|;&]*?{_FLAG_START}(?:-n|--auth){_FLAG_GAP}[^\s:\"']+:(?P<value>[^\s\"']+)"),
    ),
    # Windows: setx DB_PASSWORD "value"
    (("setx",), rx(rf"(?i)\bsetx[ \t]+[\"']?(?P<key>[\w.\-]+)[\"']?[ \t]+{_QUOTED_OR_WORD}")),
    # an ODBC connection string's password in braces: "Uid=sa;Pwd={a;b}}c}" (a "}" is written "}}")
    (("pwd", "pass"), _ODBC_PASSWORD),
    # reg query: "    DefaultPassword    REG_SZ    value" (Winlogon's automatic logon, a service's settings)
    (
        ("reg_sz", "reg_expand_sz", "reg_multi_sz"),
        rx(r"(?i)^[ \t]*(?P<key>[^\s\"][^\t\"]*?)[ \t]+REG_(?:SZ|EXPAND_SZ|MULTI_SZ)[ \t]+(?P<value>\S.*?)[ \t]*$"),
    ),
    # a name/value pair in one JSON object (ECS, `aws ssm`, CloudFormation parameters):
    # {"name": "DB_PASSWORD", "value": "X"}, {"ParameterKey": "DbPassword", "ParameterValue": "X"}
    (
        ('"value"', '"parametervalue"'),
        rx(
            r"(?i)\"(?:name|key|parameterkey|variable)\"[ \t]*:[ \t]*\"(?P<key>[^\"\\]{1,80})\"[ \t]*,[ \t]*"
            r"\"(?:value|parametervalue)\"[ \t]*:[ \t]*\"(?P<value>(?:[^\"\\]|\\.)+)\""
        ),
    ),
    # a setting inside a URL-encoded value (a redirect's parameter, a logged form body): password%3DX, pass%3AX
    (
        ("%3d", "%3a"),
        rx(
            # Only a name with a key word is a candidate, so that an outer name (https%3A, next%3D) does not take
            # the rest of the line, and the setting inside it, as its value.
            r"(?i)(?:(?<![\w.\-])|(?<=%[0-9A-F]{2}))(?P<key>(?:[A-Za-z_][\w.\-]{0,30}?)?(?:pass|pwd|pw|secret|token|key|auth|credential|sess)"
            r"[\w.\-]{0,30}?)(?:%3D|%3A)"
            r"(?P<value>(?:(?!%2[6CcBb0]|%3[Bb])[^\s&\"'<>])+)"
        ),
    ),
    # a directive of a space-separated config file: "bindpw X", "rootpw X", "smtp_pass X" (see _DIRECTIVE)
    (KEYWORDS, _DIRECTIVE),
    # a two-column table of variables (PowerShell `Get-ChildItem Env:`): "API_TOKEN      value"
    (KEYWORDS, rx(r"^[ \t]*(?P<key>[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)[ \t]{2,}(?P<value>\S.*?)[ \t]*$")),
)
_SPECIAL_LITERALS = tuple(sorted({literal for literals, _ in _SPECIAL for literal in literals}))


class SpecialForms:
    """Passwords in whitespace-separated forms that only specific tools use (.netrc, redis, netsh, curl...)."""

    names = Assignments.names

    def triggers(self) -> Triggers:
        return Triggers(_SPECIAL_LITERALS)

    def apply(self, line: str, hit: Hit) -> str:
        def replace(m: re.Match[str]) -> str:
            kind = keys.PASSWORD
            if "key" in m.re.groupindex:
                kind = keys.classify_key(m.group("key"))
                if kind is None or (m.re is _DIRECTIVE and kind != keys.PASSWORD):
                    return m.group(0)  # a directive's value is taken for a password's only ("SecretStorage 3.3.3")
            value = m.group("value")
            if is_not_secret(value.strip("\"'")) or (m.re is _ODBC_PASSWORD and _PLACEHOLDER.fullmatch(value)):
                return m.group(0)
            hit(kind)
            s, e = m.span("value")
            return m.group(0)[: s - m.start()] + token(kind) + m.group(0)[e - m.start() :]

        lowered = line.lower()
        present = {literal for literal in _SPECIAL_LITERALS if literal in lowered}
        for literals, pattern in _SPECIAL:
            if not present.isdisjoint(literals):
                line = pattern.sub(replace, line)
        if "pass" in lowered and _NETRC_LINE.search(line):
            line = _NETRC_PASSWORD.sub(replace, line)
        return line
