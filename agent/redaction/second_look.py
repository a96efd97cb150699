"""The final check's second look: its own detectors, written apart from the first pass's, so it can
catch what the detectors missed.

The first pass (:mod:`agent.redaction.detectors`) decides what to *replace*; this
module only decides which *lines* still look as if they hold a secret. It shares
no pattern or detector with the first pass: a class of secret the first pass does
not know, or a spelling its pattern misses, meets different code here. It does
read the same lists of word forms (:mod:`agent.redaction.words`), so a word the
first pass learns is never one it does not know. Its heuristics:

- a value that looks random (mixed character classes, letters and digits
  interleaved, or long and high in entropy) in a credential position: after a
  key word for a secret in one of several languages, as a URL's password,
  after a password flag (``-pX``, ``--password=X``, ``/p:X``), or as the last
  field of a ``.pgpass``-style ``host:port:db:user:password`` group;
- keys whose format announces them wherever they stand (``sk-…``, ``ghp_…``,
  ``xoxb-…``, ``AKIA…``, ``SG.….…``, JSON web tokens, PEM private keys).

What it finds is never replaced in place: the final check withholds the whole
line (see :func:`withhold_lines`), because a line the two passes disagree on
cannot be trusted in part.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from agent.redaction import words
from agent.redaction.triggers import literal_line_starts, literal_trie
from agent.regexes import rx

#: Every kind of secret the second look knows, for "checked for N kinds" and its findings' names.
KINDS = ("keyword-value", "url-password", "password-flag", "colon-file", "known-key-format", "private-key")


def _trie(literals, *, spaced: bool = False) -> str:
    """One alternation of ``literals`` written as a trie (see :func:`literal_trie`); ``spaced``: a space
    in a literal stands for a space or a tab."""
    combined = literal_trie(sorted(set(literals)))
    if combined is None:
        return "(?!)"
    return "(?:" + (combined.replace("\\ ", "[ \\t]") if spaced else combined) + ")"


#: Words that announce a secret, in several languages (matched case-insensitively, at a word start).
_SECRET_WORDS = (
    r"pass(?:w(?:or)?d|phrase|code|wort)?|pwd|pw|kennwort|mot[ \t]+de[ \t]+passe|mdp|contrase(?:ñ|n)a|clave|senha|"
    r"parola(?:[ \t]+d'ordine)?|wachtwoord|l(?:ö|o)senord|passord|adgangskode|has(?:ł|l)o|heslo|jelsz(?:ó|o)|"
    r"salasana|пароль|парол|密码|密碼|パスワード|비밀번호|secret|token|api[ _.-]?key|apikey|access[ _.-]?key|"
    r"private[ _.-]?key|auth(?:[ _.-]?token)?|credentials?|psk|pre[ _-]?shared[ _-]?key|client[ _.-]?secret|"
    r"bearer|sas|connection[ _.-]?string|key[ _.-]?material|authtok"
    # The word forms the first pass knows (agent/redaction/words.py): a spelling it learns, this look learns too.
    # Lists of plain words go in as tries (``pass(?:word)?|…`` written once per shared start): the regex engine
    # tries this at every word of a line, and a trie costs about what one word does.
    rf"|{_trie({word.lower() for word in words.password_words()}, spaced=True)}"
    rf"|{_trie({word.lower() for word in words.ESCAPED_PASSWORD_WORDS})}"
    rf"|{_trie(words.ABBREVIATED_PASSWORD_WORDS)}"
    rf"|{_trie(words.SCHLUESSEL_QUALIFIERS)}[ _.-]?(?:keys?|{words.SCHLUESSEL})"
)
#: Key word, an optional short continuation of the key's name (``db_password``, ``secret key``), a
#: separator (``:``, ``=``, ``=>``, a verb "is" in several languages, or just spaces), the value.
_KEYWORD_VALUE = rx(
    rf"(?i)(?<![^\W_])(?:{_SECRET_WORDS})(?-i:(?![a-z]))(?:[ \t]+(?:key|phrase|value|word)(?!\w)|[\w.-]{{0,24}})?[\"']?"
    r"(?:[ \t]*(?::=|" + "|".join(re.escape(sep) for sep in sorted(words.SEPARATORS, key=len, reverse=True)) + r")"
    r"|[ \t]+(?:is|ist|est|es|é|er|är|jest|je|on|это|е|є|είναι|היא|הוא|هي|هو|là|adalah|है|:)?)[ \t]*[\"'({]?"
    r"(?P<value>[^\s\"',;()<>\[\]{}=]{6,}={0,2})"
)
#: The same in markup: an element named for a secret (``<Password>X</Password>``, a Wi-Fi profile's
#: ``<keyMaterial>``), or a key/value pair of attributes (``<add key="DbPassword" value="X"/>``).
_MARKUP_VALUE = rx(
    r"<(?P<tag>[\w.:-]{2,64})(?:[ \t][^<>]*)?>[ \t]*(?P<value>[^<>\s]{6,})[ \t]*</"
    r"|\b(?:key|name)[ \t]*=[ \t]*[\"'](?P<name>[^\"'<>]{2,64})[\"'][ \t]+value[ \t]*=[ \t]*[\"'](?P<attr>[^\"'\s]{6,})[\"']",
    re.IGNORECASE,
)
#: Whether a tag's or a setting's name holds a word for a secret.
_SECRET_NAME = rx(rf"(?i)(?:{_SECRET_WORDS})")
#: netsh's label of a Wi-Fi pass-phrase, in Windows' languages ("Key Content            : …"); apart from the key
#: words above, which are tried at every word of a line, as this is needed only where a label's piece is.
_KEY_CONTENT = rx(rf"(?i)(?<![^\W_])(?:{words.KEY_CONTENT_LABELS})[ \t]*:[ \t]*(?P<value>\S+)")
_KEY_CONTENT_PIECES = rx(literal_trie(words.KEY_CONTENT_TRIGGERS))
#: A config file's directive or a registry value named for a password, its value alone after it: ``bindpw X``,
#: ``rootpw X``, ``AuthPass X``, ``DefaultPassword    REG_SZ    X`` (reg query).
_DIRECTIVE_VALUE = rx(
    r"(?i)^[ \t]*[\w.-]*(?:pw|pass|passwd|password|passphrase|authtok)[ \t]+(?:REG_(?:SZ|EXPAND_SZ|MULTI_SZ)[ \t]+)?"
    r"[\"']?(?P<value>[^\s\"']{6,})[\"']?[ \t]*$"
)
#: A PIN is digits, so never random-looking: after its word and a separator, four to twelve of them are a PIN.
_PIN = rx(
    rf"(?i)(?<![^\W_])(?:{words.PIN_WORDS})(?![\w-])(?:[ \t]*(?:{'|'.join(map(re.escape, words.SEPARATORS))})"
    r"|[ \t]+(?:is|ist|est|es|:))[ \t]*[\"']?\d{4,12}(?![\w.,:/-]*\d)"
)
_URL_PASSWORD = rx(r"(?i)\b[a-z][a-z0-9+.-]{1,20}://[^/\s:@\"'<>`]{0,128}:(?P<value>[^\s@/]{1,256})@")
_PASSWORD_FLAG = rx(
    r"(?:^|[\s\"'=.\[])(?:-p|-P|-pw|--?pass(?:word)?[= ]|/p[:=]|/pass(?:word)?[:=]|/pwd[:=]|-Password[ \t]+"
    # what a command reads as its password: a here-string, an answer yes repeats, a file made from echo
    r"|<<<[ \t]*[\"']?(?:[\w.-]+:)?|yes[ \t]+[\"']?|<\((?:echo|printf(?:[ \t]+[\"']%s(?:\\n)?[\"'])?)[ \t]+[\"']?"
    # Windows and PowerShell: net user NAME X, ConvertTo-SecureString X, pdftk's user_pw X
    r"|(?i:net(?:\.exe)?[ \t]+user[ \t]+(?:\"[^\"]*\"|[^\s/]+)[ \t]+|net(?:\.exe)?[ \t]+use[ \t][^\n]*?[ \t]/u(?:ser)?:"
    r"(?:\"[^\"]*\"|\S+)[ \t]+(?![/*])[\"']?|ConvertTo-SecureString(?:[ \t]+-\w+)*[ \t]+[\"']?"
    r"|(?:NetworkCredential|HTTP(?:Basic|Digest|Proxy)Auth|BasicAuth|UsernamePasswordCredentials)\]?(?:::new)?"
    r"\([ \t]*(?:\"[^\"]*\"|'[^']*'|\$?\w+)[ \t]*,[ \t]*[\"']?|(?:user|owner)_pw[ \t]+[\"']?"
    # WMI and .NET SetPassword("X"); wpa_cli set_network 0 psk '"X"'; networksetup -setairportnetwork en0 SSID X
    r"|(?:Set|Change)Password[ \t]*\(?[ \t]*(?:[\"'][^\"'\n]*[\"'][ \t]*,[ \t]*)?[\"']?"
    r"|set_network[ \t]+\d+[ \t]+(?:psk|password|sae_password|wep_key\d)[ \t]+[\"'\\]*"
    r"|-setairportnetwork[ \t]+\S+[ \t]+(?:\"[^\"]*\"|\S+)[ \t]+[\"']?"
    # a login call's literal password: ftp.login("bob", "X")
    r"|(?:login|log_in|signin|sign_in|authenticate)[ \t]*\([ \t]*(?:\"[^\"]*\"|'[^']*'|[A-Za-z_][\w.]*)[ \t]*,[ \t]*[\"']))"
    r"(?P<value>[^\s\"')]{4,})"
)
#: host:port:db:user:password; the host may be ``*``, ``[::1]`` or ``\\:\\:1``, and a field may hold ``\\:``.
_COLON_FILE = rx(
    r"(?<![\w.:\\-])(?:\[[0-9A-Fa-f:.]+\]|(?:[\w.*-]|\\.)+):(?:\d{1,5}|\*|<n>):[^\s:]+:[^\s:]+:"
    r"(?P<value>(?:[^\s:\\\"',;]|\\.)+)(?=[\s\"',;]|$)"
)
_KNOWN_KEY = rx(
    r"(?<![\w-])(?:sk-(?:proj-|ant-(?:api\d\d-)?|live_|test_)?[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|"
    r"github_pat_[A-Za-z0-9_]{30,}|glpat-[A-Za-z0-9_-]{20}|xox[abposr]-[A-Za-z0-9-]{10,}|"
    r"(?:AKIA|ASIA)[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}|"
    r"(?:AC|SK)[0-9a-f]{32}|npm_[A-Za-z0-9]{30,}|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}|"
    r"(?:sk|rk|pk)_live_[A-Za-z0-9]{16,})(?![\w-])"
)
_PRIVATE_KEY = rx(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
#: Cheap words that must be in a line before the keyword pattern is worth running (lower-cased line).
_PREFILTER_WORDS = (
    "pass", "pw", "kennwort", "mot de", "mdp", "contrase", "clave", "senha", "parola", "wachtwoord", "senord",
    "passord", "adgangskode", "hasło", "haslo", "heslo", "jelsz", "salasana", "парол", "密码", "密碼", "パスワード",
    "비밀번호", "secret", "token", "key", "auth", "credential", "psk", "bearer", "sas", "connection", "schl", "psw",
)
#: Written as a trie (literal_trie): a plain alternation of a few hundred words costs four times as much.
_PREFILTER = rx(literal_trie(sorted({*_PREFILTER_WORDS, *words.PASSWORD_TRIGGERS})))
#: Lower-case pieces one of which is in every line the second look could flag: its key words, a URL's
#: "://", a password flag, the prefixes of the key formats, "private key".
_CANDIDATE_LITERALS = (
    "pass", "pw", "kennwort", "mot de", "mdp", "contrase", "clave", "senha", "parola", "wachtwoord", "senord",
    "passord", "adgangskode", "hasło", "haslo", "heslo", "jelsz", "salasana", "парол", "密码", "密碼", "パスワード",
    "비밀번호", "secret", "token", "key", "auth", "credential", "psk", "bearer", "sas", "connection", "://", "-p",
    "/p:", "/p=", "sk-", "sk_", "rk_", "pk_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xox",
    "akia", "asia", "aiza", "sg.", "npm_", "eyj", "private", "schl", "<<<", "yes ", "yes\t", "<(", "net use",
    "net.exe", "securestring", "_pw", "set_network", "setairportnetwork", "login(", "log_in(", "signin(", "sign_in(",
    *words.PASSWORD_TRIGGERS,
    *words.SHORT_TRIGGERS,
    *words.KEY_CONTENT_TRIGGERS,
)
#: Twilio-style ids (two letters and 32 hex digits) have no telling prefix: found by their shape.
_HEX_ID = rx(r"(?<![\w-])(?:AC|SK)[0-9a-f]{32}(?![\w-])")
#: The same without its boundaries, which a search over a whole text pays for at every position.
_HEX_ID_LOOSE = rx(r"(?:AC|SK)[0-9a-f]{32}")
#: A JSON escape (``pass\\u0077ord``): the line is looked at as decoded too.
_ESCAPE = rx(r"\\u[0-9a-fA-F]{4}")
#: The ``:port:`` of a .pgpass-style group, cheaper to look for than the whole group.
_COLON_PORT = rx(r":(?:\d{1,5}|\*|<n>):[^\s:]+:[^\s:]+:")

#: What a value already removed or never secret starts with: markers, placeholders, paths, variables.
_NOT_A_VALUE_START = ("[", "<", "$", "{", "/", "~/", "(", "\\", "@", "&")
#: ``/p:OutDir=lib`` is an msbuild property, not a password.
_PROPERTY = rx(r"[A-Za-z_]\w*=")
_VARIABLE = rx(r"%\w+%.*|\*+")
_MARKER = rx(r"REDACTED|withheld|redacted\.invalid|^(?:ip|host|user|mac|email|ipv6)-\d+", re.IGNORECASE)
_NUMBER_LIKE = rx(r"[\d.,:/+-]+[a-z%]{0,3}", re.IGNORECASE)
#: Versions (``1:4.13+dfsg1-1+b1``), host:port pairs and paths: mixed classes, nothing secret.
#: A date and time (ISO 8601, with its T and Z): a password's expiry or last change, never a generated secret.
_TIMESTAMP = rx(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?")
_VERSION = rx(r"v?(?:\d+:)?\d+\.\d+[\w.+~:-]*", re.IGNORECASE)
_HOST_PORT = rx(r"[A-Za-z][\w.-]*:\d{1,5}")
_PATH = rx(r"[\w.-]*(?:/[\w.-]+)+/?|[A-Za-z]:\\[\w .\\-]*|[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,6}")


#: The stand-ins of a normalised log line (see the logs collector): numbers, hex, addresses, UUIDs.
_SHAPE_TOKENS = rx(r"<(?:n|hex|ip|uuid)>")


def looks_random(value: str) -> bool:
    """True for a value shaped like a generated secret rather than a word, number, name or path.

    Random-looking means: at least three character classes (lower, upper, digit,
    other symbol); or letters and digits interleaved at least three times; or
    twenty characters and more with high entropy. Words, numbers, snake_case
    names and versions stay below all three.
    """
    value = value.rstrip("=")  # base64 padding, or the "=" of a key that follows
    if len(value) < 6 or value.startswith(_NOT_A_VALUE_START) or _MARKER.search(value) or "://" in value:
        return False
    if _VARIABLE.fullmatch(value):  # %APPDATA%\…, a row of stars
        return False
    if _NUMBER_LIKE.fullmatch(value) or value.strip("*•x.") == "" or _VERSION.fullmatch(value) \
            or _TIMESTAMP.fullmatch(value):
        return False
    if _HOST_PORT.fullmatch(value) or (_PATH.fullmatch(value) and all(
            not _mixed(part) for part in re.split(r"[/\\.]", value))):
        return False
    classes = (any(c.islower() for c in value) + any(c.isupper() for c in value) + any(c.isdigit() for c in value)
               + any(not c.isalnum() and c not in "_-." for c in value))
    if classes >= 3 and not _is_name(value):
        return True
    switches = sum(1 for a, b in zip(value, value[1:]) if a.isalpha() != b.isalpha() and a.isalnum() and b.isalnum())
    if switches >= 3 and not _is_name(value):
        return True
    if len(value) < 20 or _entropy(value) < 3.6:
        return False
    # Long words glued together (DefaultEndpointsProtocol) are high in entropy too; random letters change case often.
    humps = sum(1 for a, b in zip(value, value[1:]) if a.islower() and b.isupper())
    return not value.isalpha() or humps >= 5


def _mixed(part: str) -> bool:
    """A path or domain part that itself looks generated (``x7k2p`` does not; ``aB3xQ9zL7k`` does)."""
    return len(part) >= 10 and sum(c.isdigit() for c in part) >= 2 and any(c.isupper() for c in part) \
        and any(c.islower() for c in part)


_NAME_PART = r"(?:[A-Z]?[a-z]{2,}|[A-Z]{2,}(?![a-z])|\d+)"
_NAME = rx(rf"{_NAME_PART}(?:[._-]?{_NAME_PART}){{0,5}}")


def _is_name(value: str) -> bool:
    """A CamelCase, snake_case or dotted identifier made of words, acronyms and at most two numbers
    (``GetWindowsVersion2``, ``NetworkManager``): mixed classes, nothing random."""
    return bool(_NAME.fullmatch(value)) and len(re.findall(r"\d+", value)) <= 2


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def scan_line(line: str) -> list[str]:
    """Return the kinds of secret the second look sees in one line (empty: nothing)."""
    found = _scan_line(line)
    if "\\u" in line:
        decoded = _ESCAPE.sub(lambda m: chr(int(m.group(0)[2:], 16)), line)
        found += [kind for kind in _scan_line(decoded) if kind not in found]
    return found


def _scan_line(line: str) -> list[str]:
    found: list[str] = []
    if "<" in line:
        # A top error's shape stands numbers in for "<n>": "host:<n>:db:user:pw" is still a .pgpass line.
        line = _SHAPE_TOKENS.sub("0", line)
    lowered = line.lower()
    keyword = _PREFILTER.search(lowered) is not None
    if (keyword and any(looks_random(m.group("value").rstrip(".:?")) for m in _KEYWORD_VALUE.finditer(line))) \
            or ("pin" in lowered and _PIN.search(line)):
        found.append("keyword-value")
    elif ":" in line and ("key" in lowered or "conten" in lowered or "inhoud" in lowered or not lowered.isascii()) \
            and _KEY_CONTENT_PIECES.search(lowered) and (m := _KEY_CONTENT.search(line)) is not None \
            and looks_random(m.group("value")):
        found.append("keyword-value")
    elif ("pw" in lowered or "pass" in lowered or "authtok" in lowered) and (
            (m := _DIRECTIVE_VALUE.match(line)) is not None and looks_random(m.group("value"))):
        found.append("keyword-value")
    elif keyword and ("</" in line or "value" in lowered) and any(
            _SECRET_NAME.search(m.group("tag") or m.group("name")) and looks_random(m.group("value") or m.group("attr"))
            for m in _MARKUP_VALUE.finditer(line)):
        found.append("keyword-value")

    if ("-p" in line or "-P" in line or "/p" in lowered or "pass" in lowered or "<<<" in line or "<(" in line
            or "yes " in lowered or "net use" in lowered or "net.exe" in lowered or "securestring" in lowered
            or "_pw" in lowered or "networkcredential" in lowered or "auth(" in lowered or "credentials(" in lowered
            or "set_network" in lowered or "login(" in lowered or "sign_in(" in lowered or "signin(" in lowered
            or "authenticate(" in lowered or "log_in(" in lowered
            or "setairportnetwork" in lowered):
        if any(looks_random(m.group("value")) and not _PROPERTY.match(m.group("value"))
               for m in _PASSWORD_FLAG.finditer(line)):
            found.append("password-flag")
    if "://" in line:
        for match in _URL_PASSWORD.finditer(line):
            value = match.group("value")
            if _MARKER.search(match.group(0)):
                continue
            if not value.startswith(_NOT_A_VALUE_START) and not value.isdigit():
                found.append("url-password")
                break
    if line.count(":") >= 4:
        if any(looks_random(m.group("value")) for m in _COLON_FILE.finditer(line)):
            found.append("colon-file")
    if _KNOWN_KEY.search(line) or _HEX_ID.search(line):
        found.append("known-key-format")
    if "PRIVATE KEY" in line and _PRIVATE_KEY.search(line):
        found.append("private-key")
    return found


def scan_text(text: str) -> list[tuple[int, str]]:
    """Return ``(line number, kind)`` (1-based) for every line of ``text`` the second look flags.

    One combined search over the whole text picks the candidate lines (most log
    lines hold no key word at all), and only those are looked at closely.
    """
    lowered = text.lower()
    if len(lowered) != len(text):  # a few letters change length when lowered: offsets would not match
        return scan_lines(text.split("\n"))
    starts = literal_line_starts(lowered, 0, _CANDIDATE_LITERALS)
    for pattern, subject in ((_HEX_ID_LOOSE, text), (_COLON_PORT, text), (_ESCAPE, text)):
        pos, size = 0, len(subject)
        while pos < size:
            match = pattern.search(subject, pos)
            if match is None:
                break
            starts.add(subject.rfind("\n", 0, match.start()) + 1)
            newline = subject.find("\n", match.end())
            pos = size if newline == -1 else newline + 1
    found: list[tuple[int, str]] = []
    line_no, counted_to = 1, 0
    for start in sorted(starts):
        line_no += text.count("\n", counted_to, start)
        counted_to = start
        end = text.find("\n", start)
        line = text[start:] if end == -1 else text[start:end]
        found.extend((line_no, kind) for kind in scan_line(line.rstrip("\r")))
    return found


def scan_lines(lines: Iterable[str], first_line: int = 1) -> list[tuple[int, str]]:
    """Like :func:`scan_text` for lines already split (numbered from ``first_line``), each looked at closely."""
    return [(number, kind) for number, line in enumerate(lines, start=first_line)
            for kind in scan_line(line.rstrip("\r"))]
