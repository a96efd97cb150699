"""The word forms that announce a password or a key, in one place: the first pass's detectors
(:mod:`agent.redaction.credentials`, :mod:`agent.redaction.keys`) and the final check's second look
(:mod:`agent.redaction.second_look`) both build their patterns from these lists, so a spelling the first
pass learns is one the final check knows too.

The lists are data (alternations of regex pieces and plain words); each reader writes its own patterns
around them, so the two passes still share no detection code.
"""

from __future__ import annotations

import json
import re
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]

# Written as words between word boundaries (Latin, Cyrillic, Greek, Hebrew, Arabic, Devanagari scripts).
PASSWORD_WORDS_SPACED = (
    r"pass(?:word|wd|phrase|code)s?|pwd|pass[ \t](?:phrase|word)|passwort|kennwort|passw[öo]rter|kennw[öo]rter"
    r"|mot[ \t]de[ \t]passe|mots[ \t]de[ \t]passe|mdp|contrase[ñn]a|contrasenya|clave|senha|palavra-passe"
    r"|wachtwoord|has[łl]o|heslo|l[öo]senord(?:et)?|salasana(?:si)?|parola[ \t]d'ordine|parol[aă]|jelsz[óo]|passord(?:et)?"
    r"|adgangskode(?:n)?|[şs]ifre(?:si|m)?|geslo|lozinka|parool|slapta[žz]odis"
    r"|пароль|пароля|паролем|парола(?:та)?|лозинка|κωδικός|[ובלמש]?ה?סיסמ[הא]|كلمة[ \t]المرور|كلمة[ \t]السر"
    r"|m[ậa]t[ \t]kh[ẩa]u|kata[ \t]sandi|kata[ \t]laluan|पासवर्ड"
)
# Written without spaces around them (Chinese, Japanese, Korean).
PASSWORD_WORDS_CJK = r"密码|密碼|口令|パスワード|暗証番号|비밀번호|암호"
# The non-ASCII words above as a JSON encoder writes them by default ("contrase\\u00f1a", "\\u043f\\u0430…"): a
# log written as JSON lines holds them so, in lower, upper or title case.
NON_ASCII_PASSWORD_WORDS = (
    "passwörter", "kennwörter", "contraseña", "hasło", "lösenord", "lösenordet", "jelszó", "parolă", "şifre",
    "şifresi", "şifrem", "slaptažodis", "пароль", "пароля", "паролем", "парола", "паролата", "лозинка", "κωδικός", "סיסמה", "סיסמא",
    "mật khẩu", "पासवर्ड", "密码", "密碼", "口令", "パスワード", "暗証番号", "비밀번호", "암호",
)  # fmt: skip
ESCAPED_PASSWORD_WORDS = tuple(sorted(
    {json.dumps(form)[1:-1] for word in NON_ASCII_PASSWORD_WORDS for form in (word, word.upper(), word.capitalize())},
    key=lambda word: (-len(word), word),
))
PASSWORD_WORDS_ESCAPED = "|".join(re.escape(word) for word in ESCAPED_PASSWORD_WORDS)
PASSWORD_TRIGGERS = (
    "pass", "pwd", "wort", "kennw", "mdp", "contrase", "clave", "senha", "wachtwoord", "hasło", "haslo", "heslo",
    "senord", "salasana", "parol", "jelsz", "adgangskode", "ifre", "geslo", "lozinka", "parool", "slapta",
    "парол", "лозинк", "κωδικ", "סיסמ", "كلمة", "khẩu", "khau", "sandi", "laluan", "पासवर्ड",
    "密码", "密碼", "口令", "パスワード", "暗証番号", "비밀번호", "암호",
    *sorted({word.lower() for word in ESCAPED_PASSWORD_WORDS}),
)  # fmt: skip
# "pass" and "pw" are words of their own too ("the pass is", "pw:"), but "pass" also means a test or a round:
# after these a value counts only if it is shaped like a password (see SpokenPasswords._replace).
#: Abbreviations people write in notes and tickets ("pswd: X", "pwrd X"): short words, judged the same way.
#: (Not "psw": a CPU's program status word in a kernel's oops.)
ABBREVIATED_PASSWORD_WORDS = ("pswd", "pswrd", "pwrd", "pword", "passwrd")
# "P/W" and "p/word" are how a password is written in a hurry ("P/W: X").
SHORT_PASSWORD_WORDS = r"pass|pw|passw|p/w|p/word|" + "|".join(ABBREVIATED_PASSWORD_WORDS)
# A PIN is digits: "PIN: 4821", "SIM PIN is 1234", "PIN-Code: 0000".
PIN_WORDS = r"pin(?:[ \t_\-]?code)?|code[ \t]pin"
SHORT_TRIGGERS = ("pw", "psw", "p/w", "pin ", "pin:", "pin=", "pin-", "pin\t", "pin_")
# A qualifier glued to "key" makes an API, credential or network key (``api_key``, ``AccountKey``, ``Security
# key``, ``WPA key``); a bare "key" or ``public_key``/``host_key`` is not a secret.
KEY_QUALIFIERS = (
    "api", "access", "secret", "account", "encryption", "encrypt", "signing", "sign", "master", "license",
    "licence", "client", "app", "auth", "shared", "storage", "sas", "subscription", "consumer", "deploy",
    "webhook", "hmac", "jwt", "crypt", "pass", "product", "registration", "activation", "routing", "integration",
    "network", "security", "wifi", "wlan", "wireless", "wpa", "wpa2", "wpa3", "wep", "recovery",
)  # fmt: skip
# German "key" (WLAN-Schlüssel, Netzwerkschlüssel, API-Schlüssel): the same qualifiers or these.
SCHLUESSEL_QUALIFIERS = (*KEY_QUALIFIERS, "netzwerk", "zugangs", "lizenz", "sicherheits", "geheim")
SCHLUESSEL = r"schl(?:ü|ue|u)ssel"
# The label `netsh wlan show profile key=clear` puts before a Wi-Fi pass-phrase, in the languages Windows speaks
# ("Key Content            : …"), and lower-case pieces of them that a line holding one contains.
KEY_CONTENT_LABELS = (
    r"key[ \t]+content|schl(?:ü|ue)sselinhalt|contenu[ \t]+de[ \t]+la[ \t]+cl[ée]|contenido[ \t]+de[ \t]+la[ \t]+clave"
    r"|contenuto[ \t]+(?:della[ \t]+)?chiave|conte[úu]do[ \t]+da[ \t]+chave|inhoud[ \t]+van[ \t]+(?:de[ \t]+)?sleutel"
    r"|sleutelinhoud|zawarto[śs][ćc][ \t]+klucza|содержимое[ \t]+ключа|nyckelinneh[åa]ll|anahtar[ \t]+i̇?[çc]eri[ğg]i"
    r"|主要なコンテンツ|关键内容|關鍵內容|키[ \t]*콘텐츠"
)
KEY_CONTENT_TRIGGERS = (
    "key content", "key\tcontent", "inhalt", "contenu", "contenido", "contenuto", "conteúdo", "conteudo", "inhoud", "zawarto",
    "содержимое", "innehåll", "innehall", "anahtar", "コンテンツ", "关键内容", "關鍵內容", "콘텐츠",
)  # fmt: skip
# Separators between a credential's word and its value, besides the spaces and verbs each pass knows.
SEPARATORS = (":", "=", "->", "=>", "→", "：", "＝")


def spellings(alternation: str) -> tuple[str, ...]:
    """Every text ``alternation`` (one of the regex pieces above: literals, ``[öo]``, ``(?:et)?``, ``[ \\t]``)
    matches, spaces written as one space; for tests that go through every word form."""

    def expand(items) -> list[str]:
        texts = [""]
        for op, arg in items:
            if op is sre_constants.LITERAL:
                options = [chr(arg)]
            elif op is sre_constants.IN:
                options = [chr(a) for o, a in arg if o is sre_constants.LITERAL and chr(a) != "\t"]
            elif op is sre_constants.SUBPATTERN:
                options = expand(arg[3])
            elif op is sre_constants.BRANCH:
                options = [text for branch in arg[1] for text in expand(branch)]
            elif op is sre_constants.MAX_REPEAT and arg[0] == 0 and arg[1] == 1:
                options = ["", *expand(arg[2])]
            else:
                raise ValueError(f"cannot spell out {op} in {alternation!r}")
            texts = [text + option for text in texts for option in options]
        return texts

    return tuple(dict.fromkeys(expand(sre_parser.parse(alternation))))


def password_words() -> tuple[str, ...]:
    """Every password word the first pass knows, as written in text (not the JSON-escaped forms)."""
    return (*spellings(PASSWORD_WORDS_SPACED), *spellings(PASSWORD_WORDS_CJK))
