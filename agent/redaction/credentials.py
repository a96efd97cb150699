"""Credentials that are not written as ``name = value``: in prose, in tool flags, in colon files.

* :class:`SpokenPasswords`: "my password is X", "pwd X", "Das Passwort lautet X",
  "le mot de passe est X", "密码是X", in the languages a Helpline user's PC may speak.
* :class:`PasswordFlags`: ``mysql -pX``, ``sshpass -p X``, ``sqlcmd -P X``, ``ldapsearch -w X``,
  ``echo X | sudo -S`` and other tools that take a password on their command line.
* :class:`ColonFiles`: ``.pgpass`` lines (host:port:db:user:password), postfix ``sasl_passwd``,
  ``ipsec.secrets`` pre-shared keys, LDAP/htpasswd ``{SHA}`` hashes.
* :class:`CredentialPositions`: an unknown token that looks random (see :func:`looks_random`),
  standing right after a word that announces a credential or after a password flag.

Every value is judged before it is removed: status words ("password is incorrect"),
prose ("password reset link sent"), paths, versions, numbers and flags stay.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from agent.redaction import keys
from agent.redaction.assignments import NSS_SOURCES, is_not_secret, spaced_to_end
from agent.redaction.tokens import TOKEN_RE, Hit, is_redacted, token
from agent.redaction.triggers import Triggers
from agent.redaction.words import (
    ESCAPED_PASSWORD_WORDS as _ESCAPED_WORDS,
    PASSWORD_TRIGGERS,
    SHORT_TRIGGERS,
)
from agent.redaction.words import PASSWORD_WORDS_CJK as _PASSWORD_WORDS_CJK
from agent.redaction.words import PASSWORD_WORDS_ESCAPED as _PASSWORD_WORDS_ESCAPED
from agent.redaction.words import PASSWORD_WORDS_SPACED as _PASSWORD_WORDS_SPACED
from agent.redaction.words import PIN_WORDS as _PIN_WORDS
from agent.redaction.words import SHORT_PASSWORD_WORDS as _SHORT_PASSWORD_WORDS
from agent.regexes import rx

PASSWORD = keys.PASSWORD
HIGH_ENTROPY = "high-entropy"

# --- what looks random ---------------------------------------------------------------------------------

_UUID = rx(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_VERSION_OR_DATE = rx(
    r"[vV]?\d+(?:[.:\-_+~/T]\d+)*(?:[.\-_+~][A-Za-z]\w*)*[Zz]?"
    r"|[vV]?\d+(?::\d+)?[.\d]*\.\d[\w.+~:\-]*"  # package versions: 1:4.13+dfsg1-1+b1, 2.36-9+deb12u4
)
_PATH_OR_HOST = rx(r"(?:[~.]?/|[A-Za-z]:\\|\\\\|\$).*|[\w\-]+(?:\.[\w\-]+)+|.*://.*|[^@\s]+@[^@\s]+\.\w+")
# "cl100k_base", "so-a0-gf-a0-83.ucode", "x86_64-linux-gnu": lower-case words and numbers joined by separators.
_IDENTIFIER = rx(r"[a-z0-9]+(?:[._\-][a-z0-9]+)+|[A-Z0-9]+(?:[._\-][A-Z0-9]+)+")
_HEX_WITH_LETTERS = rx(r"(?=[0-9]*[a-fA-F])[0-9a-f]+|(?=[0-9]*[A-F])[0-9A-F]+")
_CAMEL_WORDS = rx(r"(?:[A-Z]?[a-z]{2,}|[A-Z]{2,}(?![a-z])|\d+)+")


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _switches(value: str) -> float:
    """How often consecutive characters change class (lower, upper, digit, other): high for random text."""

    def kind(c: str) -> int:
        return 0 if c.islower() else 1 if c.isupper() else 2 if c.isdigit() else 3

    kinds = [kind(c) for c in value]
    return sum(a != b for a, b in zip(kinds, kinds[1:])) / max(1, len(value) - 1)


PSEUDONYMS = rx(r"(?<![\w-])(?:ip6?|mac|host|user|email)-\d+(?:@redacted\.invalid)?(?![\w-])", re.IGNORECASE)


def looks_random(value: str) -> bool:
    """True for a token that looks generated (a key, a password, a session id), not for words,
    versions, dates, UUIDs, paths, host names, identifiers or plain numbers."""
    # A pseudonym (user-1, host-2, ip-3) stands where a value was already replaced; it is no secret, and
    # its digit must not make a path like "&/home/user-1" look random the second time text is redacted.
    v = PSEUDONYMS.sub("", value) if "-" in value else value
    if not 12 <= len(v) <= 512 or is_redacted(v):
        return False
    if _UUID.fullmatch(v) or _VERSION_OR_DATE.fullmatch(v) or _PATH_OR_HOST.fullmatch(v) or _IDENTIFIER.fullmatch(v):
        return False
    if _CAMEL_WORDS.fullmatch(v) and _switches(v) < 0.45:
        return False  # GetWindowsVersion2, NetworkManager
    lower = any(c.islower() for c in v)
    upper = any(c.isupper() for c in v)
    digit = any(c.isdigit() for c in v)
    other = any(not c.isalnum() for c in v)
    digits = sum(c.isdigit() for c in v)
    if digits > 0.7 * len(v) and not (len(v) >= 24 and _HEX_WITH_LETTERS.fullmatch(v)):
        return False  # a number, a phone number, a date; not a long hex secret that happens to be mostly digits
    classes = lower + upper + digit + other
    entropy = _entropy(v)
    if classes >= 3 and (lower or upper) and digit and entropy >= 3.0 and _switches(v) >= 0.2:
        return True
    # Hex or base32 secrets: one letter case and digits, long and well mixed.
    return classes == 2 and digit and len(v) >= 20 and entropy >= 3.3 and _switches(v) >= 0.3


# --- the word for "password" ---------------------------------------------------------------------------

_SECRET_WORDS = (
    r"(?:api|access|secret|auth|bearer|refresh|session|private|app|client|license|licence|product|storage|account"
    r"|shared|master|encryption|signing|subscription|network|security|wifi|wi-fi|wlan|wireless|pre-shared|wpa[23]?"
    r"|wep)"
    r"[ \t_\-]?(?:key|token|secret)s?|tokens?|secrets?|credentials?|cl[ée][ \t]api|cl[ée][ \t]secr[èe]te"
    r"|api-schl[üu]ssel|geheimnis"
)
SECRET_TRIGGERS = ("key", "token", "secret", "credential", "clé", "cle ", "schlüssel", "schlussel", "geheimnis")

# The boundary before a word is checked after the match (see _starts_word): a look-behind at the start
# of a pattern stops the regex engine from skipping ahead to the letters a word can start with.
_WORD_BEFORE = frozenset("-./\\@$%")
_AFTER_WORD = r"(?![\w\-])"
_PW_WORD = (rf"(?:(?:{_PASSWORD_WORDS_SPACED}){_AFTER_WORD}|(?:{_PASSWORD_WORDS_CJK})"
            rf"|(?:{_PASSWORD_WORDS_ESCAPED}){_AFTER_WORD})")
_SHORT_WORD = rf"(?:{_SHORT_PASSWORD_WORDS}){_AFTER_WORD}"
_PIN_WORD = rf"(?:{_PIN_WORDS}){_AFTER_WORD}"
_SECRET_WORD = rf"(?:{_SECRET_WORDS}){_AFTER_WORD}"
_CJK_START = frozenset("密口パ暗비암")


# Where a credential word can start, as plain lower-case text: searching these first is fast; the full
# patterns then only run at the start of each word that holds one.
_STEMS = rx(
    "|".join(
        re.escape(stem)
        for stem in sorted(
            {
                "pass", "pwd", "wort", "kennw", "mot", "mdp", "contrase", "clave", "senha", "palavra", "wachtwoord",
                "hasło", "haslo", "heslo", "senord", "salasana", "parol", "jelsz", "adgangskode", "ifre",
                "geslo", "lozinka", "parool", "slapta", "парол", "лозинк", "κωδικ", "סיסמ", "كلمة", "mật",
                "mat kh", "kata", "पासवर्ड", "密码", "密碼", "口令", "パスワード", "暗証番号", "비밀번호", "암호",
                "key", "token", "secret", "credential", "clé", "cle", "schl", "geheim", "auth", "bearer",
                "refresh", "session", "private", "app", "client", "licen", "product", "access", "api", "pw", "psw", "p/w",
                "pin",
                "code",
                "storage", "account", "shared", "master", "encryption", "signing", "subscription", "network",
                "security", "wifi", "wi-fi", "wlan", "wireless", "pre-shared", "signature", "wpa", "wep",
                *(word.lower() for word in _ESCAPED_WORDS),
            },
            key=lambda stem: (-len(stem), stem),  # longest first; the same text on every run
        )
    )
)  # fmt: skip


_last_word_starts: tuple[str, list[int]] = ("", [])


def _word_starts(line: str) -> list[int]:
    """Return where the words that hold a credential stem start, in order (CJK words where the stem is)."""
    global _last_word_starts
    cached = _last_word_starts
    if cached[0] == line:
        return cached[1]  # two detectors in a row ask about the same line
    starts = _find_word_starts(line)
    _last_word_starts = (line, starts)
    return starts


def _find_word_starts(line: str) -> list[int]:
    lowered = line.lower()
    if len(lowered) != len(line):
        lowered = line  # offsets must stay valid; the patterns themselves ignore case
    starts: list[int] = []
    for m in _STEMS.finditer(lowered):
        i = m.start()
        if line[i] not in _CJK_START:
            while i > 0 and line[i - 1].isalpha() and line[i - 1] not in _CJK_START:
                i -= 1
        if (not starts or starts[-1] != i) and _starts_word(line, i):
            starts.append(i)
    return starts


def _starts_word(line: str, start: int) -> bool:
    """True if ``line[start:]`` starts a word (CJK words need no boundary: they are written without spaces)."""
    if start == 0 or line[start] in _CJK_START or line.startswith("\\u", start):
        return True
    before = line[start - 1]
    if before == "-" and start >= 3 and line[start - 2].isalpha() and line[start - 3].isalpha():
        # The last part of a compound: "Root-Passwort", "WLAN-Kennwort", "Admin-Password"; not a token's name.
        opened = line.rfind("[REDACTED:", max(0, start - 48), start)
        return opened == -1 or "]" in line[opened:start]
    return not (before.isalnum() or before == "_" or before in _WORD_BEFORE)

# The spaces between a credential's word, its separator and its value: French puts a no-break space (or a narrow
# one) before a colon, and text pasted from a chat or a document carries those and zero-width spaces too.
_SP = "[ \t\u00a0\u2007\u202f\u200b]"
# Who or what the password is for: "password for bob is", "Passwort für den Server:", "contraseña del wifi es",
# "пароль от роутера:"; a word of the phrase may be a token the redaction wrote ("auth token for [REDACTED:…] is").
_PREPOSITIONS = (
    r"for|of|für|fuer|von|vom|zum|zur|pour|de|du|des|para|per|voor|van|dla|pro|för|til|do|da|das|dos|del|della"
    r"|dello|dei|di|al|au|na|od|для|от|к|на|у|із|з"
)
_FOR_WORD = r"(?:\[REDACTED:[\w\-]+\]|[^\s:=\[\]\"'<>]{1,40}?)"
_FOR_PHRASE = rf"{_SP}+(?:{_PREPOSITIONS})(?:{_SP}+{_FOR_WORD}){{1,3}}?"
_FOR = rf"(?:{_FOR_PHRASE})?"
# What kind of password, between the word and its separator: "password (case sensitive):", "Mot de passe Wi-Fi :",
# "contraseña nueva:", "WLAN key (WPA2):". Any words may stand there before a colon or an equals sign, so the value
# after them must look like a password (see SpokenPasswords._shaped_after_words).
_KIND_WORDS = rf"(?P<kinds>(?:{_SP}*\([^()\n]{{1,40}}\)|{_SP}+[^\W\d_][\w'’\-]{{0,20}}){{1,3}}?)"
_VERBS = (
    r"is|was|are|were|will[ \t]be|ist|war|sind|lautet|lautete|heißt|est|était|sera|c'est|c’est|es|era|fue|será|é|è"
    r"|e'|sarà|foi|jest|brzmi|wynosi|to|je|är|var|er|on|oli|este|van|это|был|была|было|будет|такой|такая"
    r"|е|є|είναι|היא|הוא|هي|هو|là|adalah|ialah|है|—|–|-|: "
)
_ADVERBS = r"now|still|jetzt|nun|noch|maintenant|toujours|ahora|todavía|agora|ainda|ora|nu|nyt|teraz|nyní|теперь"
_SET_TO = (
    r"(?:(?:is|was|has[ \t]been|got|wurde|ist|a[ \t]été|est)[ \t]+)?"
    r"(?:set|changed|reset|updated|geändert|gesetzt|changé|défini|cambiada|alterada)[ \t]+(?:to|auf|in|à|en|para|a|zu)"
)
_STRONG = (
    rf"{_SP}*(?:[:=：＝]|->|=>|→){_SP}*"
    rf"|{_SP}+(?:(?:{_VERBS})(?:{_SP}+(?:{_ADVERBS}))?|{_SET_TO})(?![\w'’]){_SP}*:?{_SP}*"
    rf"|{_SP}*(?:是|为|為|は|는|은|이|가|：){_SP}*"
)
_SYMBOL_SEPARATOR = rf"{_SP}*(?:[:=：＝]|->|=>|→){_SP}*"
# A bare value is a word: brackets and quotes inside it belong to it ("Pd}&Q:tE7", "+iGp\"58@WAm!"); a quote or a
# bracket at its end does not, nor a redaction token after it.
# A value that opens with a bracket or a quote it never closes at a word's end is a word too ("(jEW[}Y{s!"); it counts
# only when it looks generated (see _opens_with_a_bracket): "(none)", "<your-password>" and "[hidden]" are not.
_VALUE = (
    r"(?:(?P<q>[\"'“„«‘`])(?P<qv>[^\"'”»’`\n]{1,200})[\"'”»’`](?=[\s,.;:)\]}]|$)"
    r"|(?P<v>[^\s\"'<>\[\](){}]{1,200}(?:(?!\[REDACTED:)[<>\[\](){}\"'`]+[^\s\"'<>\[\](){}`]+){0,20})"
    r"|(?P<o>(?!\[REDACTED:)[\"'“„«‘`<\[({)\]}>][^\s]{5,200}))"
)
_SPOKEN_STRONG = rx(
    rf"(?i)(?P<word>{_PW_WORD}|{_SECRET_WORD}|{_SHORT_WORD}|{_PIN_WORD}){_FOR}(?P<conn>{_STRONG}){_VALUE}")
# The same with words naming the kind of password before a colon or an equals sign.
_SPOKEN_KINDS = rx(
    rf"(?i)(?P<word>{_PW_WORD}|{_SECRET_WORD}){_KIND_WORDS}{_FOR}(?P<conn>{_SYMBOL_SEPARATOR}){_VALUE}")
_SEPARATOR_NEAR = rx(r"[:=：＝→]|->|=>")
_KINDS_REACH = 200  # the word, three words of its kind (in brackets or not), a phrase for whom, the separator
# "Пароль от роутера X": for whom, then the value after a space; only a value that looks generated counts.
_SPOKEN_FOR_WEAK = rx(rf"(?i)(?P<word>{_PW_WORD}){_FOR_PHRASE}(?P<conn>{_SP})(?=\S){_VALUE}")
# One space only: wider gaps are the columns of a table ("passwd      1:4.13-1  amd64").
_SPOKEN_WEAK = rx(rf"(?i)(?P<word>{_PW_WORD}|{_SHORT_WORD}|{_PIN_WORD})(?P<conn>[ \t])(?=[^ \t]){_VALUE}")
# "password, X": after a comma, as after a phrase for whom, only a value that looks generated counts.
_SPOKEN_COMMA = rx(rf"(?i)(?P<word>{_PW_WORD})(?P<conn>{_SP}*,{_SP}+)(?=\S){_VALUE}")
# The patterns in the order they are tried at a word, each with how sure its connector makes the value.
_SPOKEN = ((_SPOKEN_STRONG, "strong"), (_SPOKEN_KINDS, "kinds"), (_SPOKEN_WEAK, "weak"), (_SPOKEN_FOR_WEAK, "for"),
           (_SPOKEN_COMMA, "for"))
_IS_PW_WORD = rx(_PW_WORD, re.I)
_IS_SHORT_WORD = rx(_SHORT_WORD, re.I)
_IS_PIN_WORD = rx(_PIN_WORD, re.I)
_PIN = rx(r"\d{4,12}")

# Words that follow "password is" / "password:" in prose and status messages, never a password.
_STOP_WORDS = frozenset(
    """
    a an the this that it its my your his her our their new old current same different another
    is was are be been being has have had will would can could may might must should shall
    to too not no yes never always only also just still now already about for of in on at by with from into
    and or but if when then than as so very more less too
    required incorrect wrong correct valid invalid expired expiring empty missing set unset reset changed
    stored saved sent weak strong short long case sensitive insensitive same used protected encrypted
    hashed managed needed necessary optional mandatory accepted rejected denied ok okay none null
    forgotten lost known unknown blank ignored
    vergessen falsch ungültig abgelaufen erforderlich leer geändert gespeichert zu nicht ist der die das
    ein eine kein keine sein ihr mein dein neu neues alt altes
    oublié oublie incorrect invalide expiré expire requis vide modifié enregistré trop pas le la les un une
    olvidada olvidado incorrecta inválida caducada requerida vacía cambiada demasiado el los una
    esquecida incorreta inválida expirada obrigatória vazia alterada
    dimenticata errata scaduta obbligatoria vuota
    vergeten onjuist ongeldig verlopen vereist leeg gewijzigd
    неверный неправильный истек истёк пустой изменен изменён
    """.split()
)
_TRAILING = ".,;:)]}»”"
_SETTING = rx(r"[A-Za-z_][\w.\-]*=")
_PATH_LIKE = rx(r"(?:[~.]?/|[A-Za-z]:[\\/]|\\\\|%[A-Za-z_]\w*%|\$\{?[A-Za-z_])")
# Words joined by a hyphen or an apostrophe ("Wi-Fi", "d'ordine", "c'est"): words, not a password's shape.
_WORD_LIKE = rx(r"[^\W\d_]+(?:['’\-][^\W\d_]+)+")
_NUMBER_LIKE = rx(r"[\d.,:\-/]+(?:ms|s|m|h|d|k|kb|mb|gb|tb|b|x|px|%)?|v?\d+(?::\d+)?[.\d]*\.\d[\w.+~:\-]*")


def _is_status_or_prose(value: str, following: str, word: str = "") -> bool:
    """Whether ``value`` after the password word ``word`` is a status or the start of a sentence, not a secret.
    Only ``passwd`` is followed by name-service sources (nsswitch.conf's "passwd: files systemd"); after any
    other word ("mot de passe = systemd …") such a word may be a password."""
    lowered = value.lower().rstrip("?!.")
    if lowered in _STOP_WORDS or (word.lower() == "passwd" and lowered in NSS_SOURCES) or is_not_secret(value):
        return True
    if value.isalpha() and value.islower():
        # "password is managed by IT", "Passwort vergessen? Hier klicken": a word followed by more words.
        rest = following.lstrip(" \t")
        # A word the redaction replaced reads as a word too: the second pass must judge as the first did.
        return len(rest) >= 2 and (rest[0].isalpha() or rest.startswith("[REDACTED:")) and following[:1] in (" ", "\t")
    return False


def _password_shaped(value: str) -> bool:
    """After a bare space ("passwd Xk3#9f"), only a value with a letter and a digit or symbol is a password.
    A pseudonym the redaction wrote (``ip-1`` for an address) is its own output and counts as a plain number:
    a value left alone as an address must stay alone once it reads ``ip-1`` (redacting twice changes nothing)."""
    value = PSEUDONYMS.sub("0", value)
    if len(value) < 4 or value.startswith("-") or _SETTING.match(value) or _PATH_LIKE.match(value):
        return False
    if _NUMBER_LIKE.fullmatch(value) or _WORD_LIKE.fullmatch(value):
        return False
    letter = any(c.isalpha() for c in value)
    digit_or_symbol = any(c.isdigit() or not c.isalnum() for c in value)
    return letter and digit_or_symbol


def _token_shaped(value: str) -> bool:
    """After "token"/"secret"/"API key" in prose, a value with a digit, a symbol or mixed case, 8+ long."""
    value = PSEUDONYMS.sub("0", value)  # a pseudonym the redaction wrote is its own output (see above)
    if len(value) < 8 or _PATH_LIKE.match(value) or _NUMBER_LIKE.fullmatch(value):
        return False
    return any(c.isdigit() for c in value) or any(not c.isalnum() for c in value) or value != value.lower()


_BRACKETS = "\"'“„«‘`<[({)]}>”»’"
_PLAIN_SYMBOLS = set("-_./:@")
_CODE_START = rx(r"[A-Za-z_]\w{2,}(?:\.[A-Za-z_]\w*)*[.(]")


_CLOSER = {"(": ")", "[": "]", "{": "}", "<": ">", '"': '"', "'": "'", "`": "`", "“": "”", "„": "“", "«": "»", "‘": "’"}


def _opens_with_a_bracket(value: str) -> bool:
    """Whether a word that opens with a bracket or a quote is a generated secret, not a placeholder or an aside.

    Without its brackets it must hold a letter, six characters or more, and a symbol
    that names and paths do not use: "(jEW[}Y{s!" and "<SxSp\\H>" are secrets; "(none)",
    "<your-password>", "[hidden]", "(v2.0)", "{{password}}" and a version are not.
    """
    inner = value.strip(_BRACKETS)
    if len(inner) < 6 or not any(c.isalpha() for c in inner) or _PATH_LIKE.match(inner) \
            or _NUMBER_LIKE.fullmatch(inner) or _CODE_START.match(inner) or _SETTING.match(inner):
        return False  # "(1:4.13+dfsg1-1)" is a package's version, "(self.password.encode(…" code, "(uid=0" a setting
    return any(not c.isalnum() and c not in _PLAIN_SYMBOLS for c in inner)


def _strip_trailing(value: str) -> str:
    while value and value[-1] in _TRAILING:
        value = value[:-1]
    return value


def _written_as_a_word(text: str) -> bool:
    """Whether ``text`` is cased as words are ("wifi", "Wi-Fi", "WLAN", "nueva"), not as a generated value."""
    return all(part in (part.lower(), part.upper(), part.capitalize()) for part in re.split(r"['’\-]", text))


class SpokenPasswords:
    """Passwords and tokens told in a sentence, in many languages: "my password is X", "pwd X", "密码：X"."""

    names = (PASSWORD, keys.SECRET)

    def triggers(self) -> Triggers:
        return Triggers((*PASSWORD_TRIGGERS, *SECRET_TRIGGERS, *SHORT_TRIGGERS))

    def apply(self, line: str, hit: Hit) -> str:
        out: list[str] = []
        done = 0
        for start in _word_starts(line):
            if start < done:
                continue
            separated = None
            for pattern, how in _SPOKEN:
                if how == "kinds":
                    if separated is None:  # words of the kind come before a colon or "=" that is near
                        separated = _SEPARATOR_NEAR.search(line, start, start + _KINDS_REACH) is not None
                    if not separated:
                        continue
                m = pattern.match(line, start)
                if m is None:
                    continue
                strong = how in ("strong", "kinds")
                rest = line[m.start("v") :] if m.group("v") is not None else ""
                config_line = line[:start].strip(" \t#;/-") == "" and m.group("conn").strip() in (":", "=", "：")
                first_word = rest.split(None, 1)[0] if rest.strip() else ""
                if (
                    strong
                    and m.group("v") is not None
                    and spaced_to_end(" = " if config_line else m.group("conn"), rest)
                    and not _is_status_or_prose(first_word, "")
                    and m.group("word").lower() != "passwd"  # `passwd: files systemd`, "passwd: password updated"
                    and not _IS_SHORT_WORD.fullmatch(m.group("word"))  # "first pass = done in two minutes"
                    and not _IS_PIN_WORD.fullmatch(m.group("word"))
                ):
                    # `mot de passe = cheval correct batterie`: spaces around the separator, then plain
                    # words to the end of the line: they are all the value.
                    kind = PASSWORD if _IS_PW_WORD.fullmatch(m.group("word")) else keys.SECRET
                    hit(kind)
                    out.append(line[done : m.start("v")])
                    out.append(token(kind))
                    done = m.start("v") + len(rest.rstrip())
                    break
                if how != "strong" and how != "weak" and not self._shaped_after_words(m, how):
                    continue
                replaced = self._replace(m, hit, strong=strong)
                if replaced != m.group(0):
                    out.append(line[done:start])
                    out.append(replaced)
                    done = m.end()
                    break
        if not out:
            return line
        out.append(line[done:])
        return "".join(out)

    @staticmethod
    def _shaped_after_words(m: re.Match[str], how: str) -> bool:
        """After words of the writer's own between the password word and the value ("Mot de passe Wi-Fi :",
        "Пароль от роутера X"), only a value shaped like a password counts; after a bare space, only one that
        looks generated."""
        if m.group("q") is not None:
            return how == "kinds"
        value = _strip_trailing(m.group("v") or m.group("o") or "")
        if is_redacted(value) or TOKEN_IN.search(value):
            return False
        if how == "kinds":
            if not all(_written_as_a_word(word) for word in re.findall(r"[^\W\d_][\w'’\-]*", m.group("kinds"))):
                return False  # "PASSWORD\tBgVIJYjYjbd:1!cL": that is the value, with a colon inside it
            is_password = _IS_PW_WORD.fullmatch(m.group("word")) is not None
            return _password_shaped(value) if is_password else _token_shaped(value)
        # Not a user name after "Failed password for invalid user": mixed case and a digit, or random-looking.
        mixed = any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value)
        return _password_shaped(value) and len(value) >= 8 and (mixed or looks_random(value))

    @staticmethod
    def _replace(m: re.Match[str], hit: Hit, *, strong: bool) -> str:
        quoted = m.group("q") is not None
        group = "qv" if quoted else "v" if m.group("v") is not None else "o"
        raw = m.group(group)
        value = raw if quoted else _strip_trailing(raw)
        if not value or is_redacted(value) or TOKEN_IN.search(value):
            return m.group(0)
        if group == "o":
            # An aside in brackets ("(skipped=2)", "(uid=1000)") closes where it opened; after a bare space or the
            # short words ("pass", "pw") only a value that looks generated counts.
            closes = _CLOSER.get(raw[0]) == raw[-1]
            if closes or not _opens_with_a_bracket(value) or (
                    (not strong or _IS_SHORT_WORD.fullmatch(m.group("word"))) and not looks_random(value.strip(_BRACKETS))):
                return m.group(0)
            kind = PASSWORD if _IS_PW_WORD.fullmatch(m.group("word")) else keys.SECRET
            hit(kind)
            return _with_token(m, group, value, kind)
        conn = m.group("conn")
        word = m.group("word").lower()
        is_password = _IS_PW_WORD.fullmatch(m.group("word")) is not None
        following = m.string[m.start(group) + len(value) :]
        if _is_status_or_prose(value, following, word):
            return m.group(0)
        if not quoted and is_not_secret(m.string[m.start(group) :].split(None, 1)[0]):
            return m.group(0)  # "password: ${DB_PASSWORD}", "password = os.environ['DB_PASSWORD']"
        if _IS_PIN_WORD.fullmatch(m.group("word")):
            # Digits only; after a bare space only the upper-case "PIN" ("GPIO pin 1234" is a pin number).
            if not _PIN.fullmatch(value) or (not strong and "PIN" not in m.group("word")):
                return m.group(0)
            hit(PASSWORD)
            return _with_token(m, group, value, PASSWORD)
        if _IS_SHORT_WORD.fullmatch(m.group("word")):
            # "pass" is also a test result or a round: only a password-shaped value, and after a bare space
            # only one that looks generated.
            spelled_out = word in ("p/w", "p/word")  # unlike "pass" and "pw", never a test result or a round
            if not _password_shaped(value) or (not strong and not quoted and not spelled_out and not looks_random(value)):
                return m.group(0)
            if not quoted and (_IDENTIFIER.fullmatch(value) or _PATH_LIKE.match(value)
                               or (value == value.lower() and _PATH_OR_HOST.fullmatch(value))):
                return m.group(0)
            is_password = True
        if word == "pwd" and _PATH_LIKE.match(value):
            return m.group(0)  # the working directory
        tight = conn.strip() in (":", "=", "：", "＝") and not conn.endswith((" ", "\t"))
        if tight and not quoted and (not _password_shaped(value) or following.startswith(")")):
            return m.group(0)  # `pam_unix(passwd:chauthtok)` is a label; `password=x` is the settings' detector's
        if is_password:
            if not strong and not quoted and not _password_shaped(value):
                return m.group(0)
            if strong and not quoted and m.group("conn").strip() in ("-", "–", "—") and not _password_shaped(value):
                return m.group(0)  # "password - see the wiki"
            kind = PASSWORD
        else:
            if not quoted and not _token_shaped(value):
                return m.group(0)
            kind = keys.classify_key(word.replace(" ", "_")) or keys.SECRET
        hit(kind)
        return _with_token(m, group, value, kind)


TOKEN_IN = rx(r"\[REDACTED:")


# "X is the new password", "X ist das neue Passwort", "X est le nouveau mot de passe": the value comes first.
_NAMED_AFTER = rx(
    rf"(?i){_SP}+(?:is|was|will[ \t]be|ist|war|wird|est|était|sera|es|era|será|é|è|sarà|foi|—|–|-|=)"
    rf"(?:{_SP}+(?:the|my|our|your|his|her|their|a|an|das|der|die|dein|mein|meine|unser|le|la|mon|ma|notre|votre"
    rf"|el|mi|tu|il|o|meu|minha|мой|наш|новый))?"
    rf"(?:{_SP}+(?:new|current|temporary|temp|initial|default|one-time|neue|neues|aktuelle|nouveau|nouvelle"
    rf"|nueva|nuevo|nuova|nova|novo|actual|provisoire|temporäre|temporal|temporanea))?"
    rf"(?:{_SP}+(?:wifi|wi-fi|wlan|admin|root|router|user|vpn|e-mail|email|mail|db|database))?"
    rf"{_SP}+(?P<word>{_PW_WORD}|{_SHORT_WORD})(?![\w\-])(?P<next>{_SP}+[^\W\d_]+)?"
)
# After "X is the password", a word that makes "password" describe something else: "… the password manager".
_NAMED_THING = frozenset(
    """
    manager managers policy policies prompt hint reset file files field fields box dialog screen form page
    rules rule requirements requirement length strength history expiry change changes generator vault safe
    store storage hash hashes protected protection entry entries setting settings option options recovery
    """.split()
)
_WORD_BEFORE_IT = rx(r"(?P<v>[^\s\"'“„«‘`(\[{<>]+)[\"'”»’`)\]}]*$")


class PasswordsNamedAfter:
    """A password told before the word for it: "c9^ba~lw!l5 is the new password", "X ist das neue Passwort".
    Only a value shaped like a password counts ("This is the password" and "Wi-Fi is the password" do not)."""

    names = (PASSWORD,)

    def triggers(self) -> Triggers:
        return Triggers((*PASSWORD_TRIGGERS, "pw"))

    def apply(self, line: str, hit: Hit) -> str:
        out: list[str] = []
        done = 0
        for m in _NAMED_AFTER.finditer(line):
            following = (m.group("next") or "").strip(" \t\u00a0\u2007\u202f\u200b").lower()
            if following in _NAMED_THING:
                continue
            before = _WORD_BEFORE_IT.search(line, done, m.start())
            if before is None:
                continue
            value = before.group("v")
            if "[REDACTED:" in line[line.rfind(" ", done, before.start()) + 1 : before.end()]:
                continue  # the word before is a token an earlier pass wrote
            if is_redacted(value) or TOKEN_IN.search(value) or not _password_shaped(value) or PSEUDONYMS.search(value):
                continue
            hit(PASSWORD)
            out.append(line[done : before.start("v")])
            out.append(token(PASSWORD))
            done = before.end("v")
        if not out:
            return line
        out.append(line[done:])
        return "".join(out)


def _with_token(m: re.Match[str], group: str, value: str, kind: str) -> str:
    """The match's text with ``value`` (which starts its ``group``) replaced by the token of ``kind``."""
    s = m.start(group) - m.start()
    return m.group(0)[:s] + token(kind) + m.group(0)[s + len(value) :]

# --- password flags of command-line tools --------------------------------------------------------------

# A value in quotes, in escaped quotes (inside a JSON string) or bare.
# A bare value goes on past a quote inside it ("-pX'Y"): a quote followed by more of the word, not by a comma or a
# space (as in a JSON argument list: "-pX", "db").
_Q = (r"(?:\\\"(?P<eq>(?:[^\"\\]|\\[^\"])+)\\\"|\"(?P<dq>[^\"]+)\"|'(?P<sq>[^']+)'"
      r"|(?P<bare>[^\s\"',\]\[\\]+(?:\\.[^\s\"',\]\[\\]*)*(?:['\"]+[^\s\"',\]\[\\]+)*))")
# A value inside parentheses (a call's argument, a process substitution): quoted, or bare up to ")" or ",".
_Q_IN_PARENS = r"(?:\"(?P<dq>[^\"\n]+)\"|'(?P<sq>[^'\n]+)'|(?P<bare>[^\s\"'),]+))"
_CMD = r"(?:^|[\s\"'\[,;|&(/\\=])"  # a tool name starts the line or follows a separator or a path
_ARG = r"(?:^|(?<=[\s\"'\[,=]))"  # a flag starts an argument (in a shell line or a JSON argv list)
_GAP = r"[^\n|;&]*?"  # the rest of the same command
_FLAG_VALUE_AFTER_SPACE = r"[\"',]*[ \t]*[\"',]*[ \t]*"
# (literals, pattern with a dq/sq/bare value): the pattern runs only on lines containing a literal.
_TOOL_FLAGS: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    # mysql -pSECRET (attached: "-p SECRET" would be the database), mysqldump, mariadb, mysqladmin...
    (
        ("mysql", "mariadb"),
        rx(rf"(?i){_CMD}(?:mysql\w*|mariadb[\w\-]*)(?:\.exe)?\b{_GAP}{_ARG}(?-i:-p){_Q}"),  # -P is the port
    ),
    (("sshpass",), rx(rf"(?i){_CMD}sshpass(?:\.exe)?\b{_GAP}{_ARG}-p{_FLAG_VALUE_AFTER_SPACE}{_Q}")),
    (
        ("redis-cli", "keydb-cli"),
        rx(rf"(?i){_CMD}(?:redis|keydb)-cli\b{_GAP}{_ARG}(?:-a|--pass|--askpass-value){_FLAG_VALUE_AFTER_SPACE}{_Q}"),
    ),
    (
        ("mongo",),
        rx(rf"(?i){_CMD}mongo(?:sh|dump|restore|export|import|stat|top|files)?\b{_GAP}{_ARG}-p{_FLAG_VALUE_AFTER_SPACE}{_Q}"),
    ),
    (
        ("sqlcmd", "bcp", "osql", "isql", "ipmitool", "mosquitto", "psexec", "paexec"),
        rx(
            rf"(?i){_CMD}(?:sqlcmd|bcp|osql|isql|ipmitool|mosquitto_(?:pub|sub|rr)|psexec(?:64)?|paexec)(?:\.exe)?\b"
            rf"{_GAP}{_ARG}-[Pp](?![\w\-]){_FLAG_VALUE_AFTER_SPACE}{_Q}"
        ),
    ),
    (("ldap",), rx(rf"(?i){_CMD}ldap\w+\b{_GAP}{_ARG}-w{_FLAG_VALUE_AFTER_SPACE}{_Q}")),
    (
        ("zip", "7z", "7za", "rar"),
        # rar's -hp also encrypts the names
        rx(rf"(?i){_CMD}(?:zip|unzip|7z|7za|7zz|7zr|rar|unrar|winrar)(?:\.exe)?\b{_GAP}{_ARG}-(?:hp|[pP]){_FLAG_VALUE_AFTER_SPACE}{_Q}"),
    ),
    (("freerdp", "rdp"), rx(rf"(?i){_CMD}\w*freerdp\w*(?:\.exe)?\b{_GAP}{_ARG}/p:{_Q}")),
    (("rdesktop",), rx(rf"(?i){_CMD}rdesktop\b{_GAP}{_ARG}-p{_FLAG_VALUE_AFTER_SPACE}{_Q}")),
    (
        ("login",),
        rx(
            rf"(?i){_CMD}(?:docker|podman|buildah|skopeo|helm|oras|nerdctl|az|crane|regctl)\b{_GAP}\blogin\b"
            rf"{_GAP}{_ARG}-p{_FLAG_VALUE_AFTER_SPACE}{_Q}"
        ),
    ),
    (("openssl",), rx(rf"(?i){_CMD}openssl\b{_GAP}{_ARG}-k{_FLAG_VALUE_AFTER_SPACE}{_Q}")),
    (
        ("/p:", "/password:", "/pass:", "/pwd:", "/p=", "/password=", "/pass=", "/pwd=", ".password:", ".password="),
        # Windows tools: /p:X, winscp /password=X, appcmd /processModel.password:X
        rx(rf"(?i){_ARG}/(?:[\w-]+\.)*(?:p|pass|password|pwd)[:=]{_Q}"),
    ),
    # WMI and .NET: `wmic useraccount ... call SetPassword "X"`, `$user.SetPassword("X")`, `.ChangePassword("old", "X")`
    (
        ("setpassword", "changepassword"),
        rx(rf"(?i)\b(?:Set|Change)Password\b[ \t]*\(?[ \t]*{_Q_IN_PARENS}"),
    ),
    (
        ("changepassword",),  # the new password, after the old one
        rx(rf"(?i)\bChangePassword\b[ \t]*\(?[ \t]*(?:\"[^\"\n]*\"|'[^'\n]*'|[^\s,()]+)[ \t]*,[ \t]*{_Q_IN_PARENS}"),
    ),
    # wpa_cli set_network 0 psk '"X"' (the pass-phrase in quotes inside the shell's quotes), password, sae_password
    (
        ("set_network",),
        rx(
            rf"(?i){_CMD}wpa_cli\b{_GAP}\bset_network[ \t]+\d+[ \t]+(?:psk|password|sae_password|wep_key\d)[ \t]+"
            r"(?:'\"(?P<sq>[^\"\n]+)\"'|\"\\?\"?(?P<dq>[^\"\\\n]+)\\?\"?\"|(?P<bare>[^\s\"']+))"
        ),
    ),
    # macOS: networksetup -setairportnetwork en0 SSID PASSWORD
    (
        ("setairportnetwork",),
        rx(rf"(?i){_CMD}networksetup\b{_GAP}-setairportnetwork[ \t]+\S+[ \t]+(?:\"[^\"\n]*\"|'[^'\n]*'|\S+)[ \t]+{_Q}"),
    ),
    (("/rp",), rx(rf"(?i){_CMD}schtasks(?:\.exe)?\b{_GAP}{_ARG}/rp[ \t]+{_Q}")),
    (
        ("net ", "net.exe"),
        rx(rf"(?i){_CMD}net(?:\.exe)?[ \t]+use\b[^\n]*?\\\\\S+[ \t]+(?!/){_Q}(?=[^\n]*?/u(?:ser)?:)"),
    ),
    # net use [Z:] \\server\share /user:[DOMAIN\]NAME PASSWORD: Windows takes the password after the user too
    (
        ("net ", "net.exe"),
        rx(rf"(?i){_CMD}net(?:\.exe)?[ \t]+use\b[^\n]*?[ \t]/u(?:ser)?:(?:\"[^\"\n]*\"|\S+)[ \t]+(?![/*]){_Q}"),
    ),
    (
        ("sqlplus", "rman", "expdp", "impdp", "exp ", "imp ", "sqlldr", "dgmgrl"),
        rx(
            rf"(?i){_CMD}(?:sqlplus|rman|expdp|impdp|exp|imp|sqlldr|dgmgrl)(?:\.exe)?\b(?:[ \t]+(?:-\w+|target|catalog|auxiliary|userid=))*"
            r"[ \t]+[\"']?[\w$#]+/(?:\"(?P<dq>[^\"]+)\"|'(?P<sq>[^']+)'|(?P<bare>[^\s@\"']+))"
        ),
    ),
    (("lftp",), rx(rf"(?i){_CMD}lftp\b{_GAP}{_ARG}-u[ \t]+[^\s,]+,{_Q}")),
    (
        ("snmp",),
        rx(rf"(?i){_CMD}snmp\w+\b{_GAP}{_ARG}-[AX]{_FLAG_VALUE_AFTER_SPACE}{_Q}"),
    ),
    (
        ("nmcli",),
        rx(
            rf"(?i){_CMD}nmcli\b{_GAP}(?<!\S)(?:password|wifi-sec\.psk|802-11-wireless-security\.psk|wifi-sec\.wep-key0"
            rf"|802-1x\.password|vpn\.secrets|\+?vpn\.secrets\.password)[ \t]+{_Q}"
        ),
    ),
    # wpa_passphrase SSID PASSPHRASE (the tool; hostapd.conf's "wpa_passphrase = X" is a setting, not an SSID "=")
    (("wpa_passphrase",), rx(rf"(?i){_CMD}wpa_passphrase[ \t]+(?![=:])(?:\"[^\"]*\"|'[^']*'|\S+)[ \t]+{_Q}")),
    (
        ("rabbitmqctl",),
        rx(rf"(?i){_CMD}rabbitmqctl\b{_GAP}\b(?:add_user|change_password)[ \t]+\S+[ \t]+{_Q}"),
    ),
    (("useradd", "usermod"), rx(rf"(?i){_CMD}user(?:add|mod)\b{_GAP}{_ARG}-p[ \t]+{_Q}")),
    # net user NAME PASSWORD [/add] (not "*", which asks for it, nor a /switch)
    (("net ", "net.exe"), rx(rf"(?i){_CMD}net(?:\.exe)?[ \t]+user[ \t]+(?:\"[^\"\n]*\"|[^\s/\"]\S*)[ \t]+(?![/*(])(?!\\?\"?/){_Q}")),
    # PowerShell: ConvertTo-SecureString "X" -AsPlainText, and a NetworkCredential's second argument
    (
        ("convertto-securestring",),
        rx(rf"(?i)\bConvertTo-SecureString\b(?:[ \t]+-(?:AsPlainText|Force)\b(?::\$true)?)*(?:[ \t]+-String)?[ \t]+(?!-){_Q}"),
    ),
    (
        # .NET's NetworkCredential, requests' HTTPBasicAuth/HTTPDigestAuth/HTTPProxyAuth, aiohttp's BasicAuth,
        # Apache HttpClient's UsernamePasswordCredentials, Java's PasswordAuthentication: (user, password)
        ("networkcredential", "basicauth", "digestauth", "proxyauth", "usernamepasswordcredentials",
         "passwordauthentication("),
        rx(
            rf"(?i)\b(?:NetworkCredential|HTTP(?:Basic|Digest|Proxy)Auth|BasicAuth|UsernamePasswordCredentials"
            rf"|PasswordAuthentication)\b(?:[ \t]*\(|\]?::new\()[ \t]*(?:\"[^\"\n]*\"|'[^'\n]*'|\$?\w+)[ \t]*,[ \t]*"
            rf"(?:new[ \t]+)?(?![A-Za-z_][\w.]*[ \t]*[),])(?!\$\w+[ \t]*[),]){_Q_IN_PARENS}"  # not a variable: code
        ),
    ),
    (("pdftk",), rx(rf"(?i){_CMD}pdftk\b{_GAP}(?<!\S)(?:user_pw|owner_pw|input_pw)[ \t]+(?!PROMPT\b){_Q}")),
    # A login call's password written into code or a log of it: ftplib/smtplib/imaplib's login("bob", "X"),
    # a client's authenticate(user, "X"). The password only as a string literal (a variable is code).
    (
        ("login(", "log_in(", "signin(", "sign_in(", "authenticate("),
        rx(
            r"(?i)\b(?:login|log_in|signin|sign_in|authenticate)[ \t]*\([ \t]*(?:\"[^\"\n]*\"|'[^'\n]*'|[A-Za-z_][\w.]*)"
            r"[ \t]*,[ \t]*(?:\"(?P<dq>[^\"\n]+)\"|'(?P<sq>[^'\n]+)')[ \t]*[,)]"
        ),
    ),
    # A secret on the standard input of a command that reads a password: a here-string (kinit <<< X,
    # sudo -S cmd <<< X, chpasswd <<< user:X) or an answer repeated by yes (yes X | passwd)
    (
        ("<<<",),
        rx(
            rf"(?i){_CMD}(?:sudo(?=[^\n|;&<]*?[ \t]-[a-zA-Z]*S\b)|passwd|chpasswd|kinit|k5start|cryptsetup|vncpasswd"
            rf"|x11vnc|htpasswd|smbpasswd|pdbedit|ldappasswd|openssl|gpg2?|ksu|expect)(?:\.exe)?\b{_GAP}<<<[ \t]*"
            r"(?:[\"']?[\w.\-]+:)?" + _Q
        ),
    ),
    # --password-file=<(echo X), --passwd-file <(printf X): a file made on the fly from the secret
    (
        ("<(",),
        rx(
            r"(?i)pass[\w\-]*[= \t]+<\([ \t]*(?:echo(?:[ \t]+-[neE]+)*|printf(?:[ \t]+(?:\"%s\\?n?\"|'%s\\?n?'))?|cat[ \t]+<<<)"
            r"[ \t]+" + _Q_IN_PARENS
        ),
    ),
    # echo SECRET | sudo -S / passwd --stdin / docker login --password-stdin / chpasswd (user:SECRET)
    (
        ("echo", "printf", "yes "),
        rx(
            r"(?i)(?:^|[\s;&(])(?:echo(?:[ \t]+-[neE]+)*|printf(?:[ \t]+(?:\"%s\\?n?\"|'%s\\?n?'))?|yes)[ \t]+"
            r"(?:[\"']?[\w.\-]+:)?" + _Q + r"[ \t]*\|[ \t]*(?:sudo[ \t]+(?:-\w+[ \t]+)*)?"
            r"(?=[^\n|;&]*?(?:sudo[ \t]+-S|-S\b|passwd|chpasswd|--password-stdin|kinit|cryptsetup|openssl|login))"
        ),
    ),
)
_TOOL_LITERALS = tuple(sorted({lit for lits, _ in _TOOL_FLAGS for lit in lits}))
_TOOL_SEARCH = rx("|".join(re.escape(lit) for lit in _TOOL_LITERALS))


def _flag_value(m: re.Match[str]) -> tuple[str, int, int] | None:
    for group in ("eq", "dq", "sq", "bare"):
        value = m.group(group) if group in m.re.groupindex else None
        if value is not None:
            return value, m.start(group), m.end(group)
    return None


# An ftp script's or session's login: "user bob X" (ftp -n), "ftp> user bob X"; only a value of six or more with a
# letter and a digit ("user bob created" is a log's sentence). Found by where the line starts, not by the word
# "user", which a log holds on many lines.
_FTP_USER_START = rx(r"(?im)^[ \t]*(?:ftp>[ \t]*)?user[ \t]")
_FTP_USER = rx(r"(?i)^[ \t]*(?:ftp>[ \t]*)?user[ \t]+[\w.@\-]+[ \t]+(?=\S{6})(?=\S*\d)(?=\S*[A-Za-z])(?P<bare>\S+)[ \t]*$")


class PasswordFlags:
    """Passwords given to command-line tools: ``mysql -pX``, ``sshpass -p X``, ``sqlcmd -P X``, ``-w X``..."""

    names = (PASSWORD,)

    def triggers(self) -> Triggers:
        return Triggers(_TOOL_LITERALS, _FTP_USER_START)

    def apply(self, line: str, hit: Hit) -> str:
        if _FTP_USER_START.match(line):
            line = self._sub(_FTP_USER, line, hit)
        lowered = line.lower()
        if _TOOL_SEARCH.search(lowered) is None:
            return line
        present = {lit for lit in _TOOL_LITERALS if lit in lowered}
        for literals, pattern in _TOOL_FLAGS:
            if not present.isdisjoint(literals):
                line = self._sub(pattern, line, hit)
        return line

    @staticmethod
    def _sub(pattern: re.Pattern[str], line: str, hit: Hit) -> str:
        out: list[str] = []
        done = 0
        pos = 0
        while pos <= len(line):
            m = pattern.search(line, pos)
            if m is None:
                break
            found = _flag_value(m)
            pos = m.end() if m.end() > pos else pos + 1
            if found is None:
                continue
            value, start, end = found
            if start < done or is_redacted(value) or TOKEN_IN.search(value) or value.startswith("-") and len(value) < 2:
                continue
            if value.startswith(("$", "%")) and re.fullmatch(r"\$\{?\w+\}?|%\w+%", value):
                continue  # a variable reference
            out.append(line[done:start])
            out.append(token(PASSWORD))
            hit(PASSWORD)
            done = end
            # The same tool may take the flag again later on the line (another command after ;).
            pos = end
        if not out:
            return line
        out.append(line[done:])
        return "".join(out)


# --- colon files ---------------------------------------------------------------------------------------

_FIELD = r"(?:[^:\s\\]|\\.)+"
# A host name holds no markup: "<tr><td>mac</td><td>ce:79:00:59:55:94</td>…" is a page's row, not a .pgpass line.
_HOST_FIELD = r"(?:[^:\s\\<>]|\\.)+"
_COLON_FILES: tuple[tuple[tuple[str, ...] | None, re.Pattern[str]], ...] = (
    # ~/.pgpass: hostname:port:database:username:password (port may be *; ":" and "\" escaped in fields)
    (None, rx(rf"^[ \t]*(?:\[[0-9A-Fa-f:.]+\]|{_HOST_FIELD}):(?P<port>\d{{1,5}}|\*):{_FIELD}:{_FIELD}:(?P<value>(?:[^\\\n]|\\.)+?)[ \t]*$")),
    # postfix sasl_passwd: [smtp.example.com]:587 user@example.com:password
    (("@",), rx(r"^[ \t]*\[?[\w.\-]+\]?(?::\d{1,5})?[ \t]+[^\s:@]+@[^\s:]+:(?P<value>\S+)[ \t]*$")),
    # ipsec.secrets: [ids] : PSK "secret" (also XAUTH, EAP, NTLM, PIN)
    (
        ("psk", "xauth", "eap", "ntlm", "pin"),
        rx(r"(?:^|\s):[ \t]*(?:PSK|XAUTH|EAP|NTLM|PIN(?:[ \t]+%\w+)?)[ \t]+(?:\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'|(?P<value>\S+))"),
    ),
    # htpasswd and LDAP userPassword: {SHA}base64, {SSHA}..., {PBKDF2-SHA256}...
    (
        ("{",),
        rx(r"\{(?:S?SHA(?:256|384|512)?|S?MD5|CRYPT|PBKDF2(?:-SHA\d+)?|ARGON2|SSHA\d*|CLEARTEXT)\}(?!\[REDACTED:)(?P<value>[^\s:\"',]{8,})", re.I),
    ),
)
_PGPASS_TRIGGER = rx(r":(?:\d{1,5}|\*):[^\s:]+:[^\s:]+:")
# The same five fields behind a log line's prefix ("2026-12-01T10:00:00 app[1]: host:5432:db:user:pw", "wrote
# ~/.pgpass -> *:*:*:postgres:pw", echo 'host:…' >> ~/.pgpass). The group starts a word and is exactly five
# fields long (a MAC address or a full IPv6 address has six or more); its password ends at a space or a quote.
_PGPASS_IN_LINE = rx(
    r"(?:(?<=[\s\"'`(=>,;])|^)(?:\[[0-9A-Fa-f:.]+\]|(?:[\w.\-*]|\\.)+):(?:\d{1,5}|\*)"
    r":(?:[^\s:\\\"'`]|\\.)+:(?:[^\s:\\\"'`]|\\.)+:(?P<value>(?:[^\s:\\\"'`]|\\.)+)(?![^\s\"'`])"
)
# Five short hex or digit groups are a hardware address or a time, not a host, port, database, user and password.
_HEX_GROUPS = rx(r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){4}")
# From the "port" on, only short hex or digit groups (a prefix length or a zone may follow): the rest of a
# hardware address or of an IPv6 address written in full ("mac-address=52:54:00:12:34:56" in a network
# profile, "fe80:0:0:0:0:0:0:1%eth0"), not a port, database, user and password.
_ADDRESS_TAIL = rx(r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){3,}(?:[/%][\w.\-]*)?")

_COLON_LITERALS = (
    "@", "psk", "xauth", "eap", "ntlm", ": pin", "{sha", "{ssha", "{md5", "{smd5", "{crypt", "{pbkdf2", "{argon2",
    "{cleartext",
)  # fmt: skip


def _overlaps_token(line: str, start: int, end: int) -> bool:
    """Whether ``line[start:end]`` takes in part of a redaction token already in ``line``."""
    return any(t.start() < end and start < t.end() for t in TOKEN_RE.finditer(line))


class ColonFiles:
    """Credentials in files of fixed colon- or space-separated fields: ``.pgpass``, ``sasl_passwd``, ``ipsec.secrets``."""

    names = (PASSWORD,)

    def triggers(self) -> Triggers:
        return Triggers(_COLON_LITERALS, _PGPASS_TRIGGER)

    def apply(self, line: str, hit: Hit) -> str:
        lowered = line.lower()
        for literals, pattern in _COLON_FILES:
            if literals is not None and not any(lit in lowered for lit in literals):
                continue

            def replace(m: re.Match[str]) -> str:
                group = next(g for g in ("dq", "sq", "value") if g in m.re.groupindex and m.group(g) is not None)
                value = m.group(group)
                s, e = m.span(group)
                if not value or is_redacted(value) or TOKEN_IN.search(value) or value in ("*",) or \
                        _overlaps_token(m.string, s, e) or \
                        ("port" in m.re.groupindex and _ADDRESS_TAIL.fullmatch(m.string, m.start("port"), e)):
                    return m.group(0)  # "[REDACTED:password]" splits at its colon, but it is an earlier token
                hit(PASSWORD)
                return m.group(0)[: s - m.start()] + token(PASSWORD) + m.group(0)[e - m.start() :]

            line = pattern.sub(replace, line)
        if ":" in line:
            line = self._pgpass_in_line(line, hit)
        return line

    @staticmethod
    def _pgpass_in_line(line: str, hit: Hit) -> str:
        """A ``.pgpass`` line behind a log line's prefix: replace its password, unless the five fields are
        hex or digit groups or the "password" is a number, a wildcard or already replaced."""

        def replace(m: re.Match[str]) -> str:
            value = m.group("value").rstrip(".,;")
            s = m.start("value")
            e = s + len(value)
            if not value or value.isdigit() or value == "*" or is_not_secret(value) or TOKEN_IN.search(value) \
                    or _HEX_GROUPS.fullmatch(m.group(0)) or _overlaps_token(m.string, m.start(), e):
                return m.group(0)
            hit(PASSWORD)
            return m.group(0)[: s - m.start()] + token(PASSWORD) + m.group(0)[e - m.start() :]

        return _PGPASS_IN_LINE.sub(replace, line)


# --- random tokens in a credential position ------------------------------------------------------------

_CANDIDATE = rx(r"(?<![\w\-+/=.~!#$%^&*?@])[A-Za-z0-9+/=_\-.~!#$%^&*?]{12,512}")
_POSITION = rx(
    rf"(?i)(?:{_PW_WORD}|{_SECRET_WORD}|{_SHORT_WORD}|(?:auth|apikey|api_key|x-api-key|passkey|key|signature){_AFTER_WORD})")
# A flag starts the line, follows a space, or is an element of a JSON argument list ("-k", "…").
_FLAG_POSITION = rx(
    r"(?<![^\s\"'\[,])--?(?:p|P|w|a|k|pass|pw|pwd|password|token|secret|key|auth)(?=[ \t=]|[\"'],)")
_WINDOW = 48
# Another setting of the same line ("credentials=/root/.smb,iocharset=utf8"): a lower-case name and "=", which
# no generated token has (base64 pads with "=" only at its end).
_SETTING = rx(r"[a-z][a-z_.\-]{2,}=(?!=)")


class CredentialPositions:
    """A random-looking token (see :func:`looks_random`) within a few characters after a word that
    announces a credential ("password", "Passwort", "token", "api key"...) or a password flag."""

    names = (HIGH_ENTROPY,)
    # A pseudonym written later on the line (``user-1`` for a long user name) moves the tokens after it into
    # the window a second pass looks in: the pipeline has this detector read the line again once one is written.
    reads_pseudonyms = True

    def triggers(self) -> Triggers:
        # The flag positions by their own pattern: "-p" as a literal woke the detector on every package name.
        return Triggers((*PASSWORD_TRIGGERS, *SECRET_TRIGGERS, "auth", "pw", "signature"), _FLAG_POSITION)

    def apply(self, line: str, hit: Hit) -> str:
        out: list[str] = []
        done = 0
        ends = [m.end() for m in (_POSITION.match(line, start) for start in _word_starts(line)) if m is not None]
        if "-" in line:
            ends = sorted({*ends, *(m.end() for m in _FLAG_POSITION.finditer(line))})
        for end in ends:
            if end < done:
                continue
            window_end = min(len(line), end + _WINDOW)
            replaced = line.find("[REDACTED:", end, window_end)
            if replaced != -1:
                window_end = replaced  # the credential after this word is already gone
            for candidate in _CANDIDATE.finditer(line, end, window_end + 64):
                if candidate.start() >= window_end:
                    break
                value = _strip_trailing(candidate.group(0))
                if candidate.start() < done or _SETTING.match(value) or not looks_random(value):
                    continue
                out.append(line[done : candidate.start()])
                out.append(token(HIGH_ENTROPY))
                hit(HIGH_ENTROPY)
                done = candidate.start() + len(value)
                break
        if not out:
            return line
        out.append(line[done:])
        return "".join(out)
