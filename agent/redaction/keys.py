"""Decide from a setting's name whether its value is a secret, and which kind.

Key names come in every spelling (``DB_PASSWORD``, ``mysql_pwd``, ``clientSecret``,
``x-api-key``, ``spring.datasource.password``), so a name is split into lower-case
segments and judged on those. Names that only *describe* a secret (``password_file``,
``token_type``, ``PasswordAuthentication``, ``max_tokens``) are not secrets: their
values are paths, types, numbers or yes/no, and scrubbing them would cost the
engineer information for no privacy gain.
"""

from __future__ import annotations


from agent.redaction import words
from agent.regexes import rx

# Detector names produced for key = value secrets.
PASSWORD = "password"
SECRET = "secret"
TOKEN = "token"
API_KEY = "api-key"
PRIVATE_KEY = "private-key"
AWS_SECRET_KEY = "aws-secret-key"
AZURE_CLIENT_SECRET = "azure-client-secret"
COOKIE = "cookie"
SESSION = "session"


_CAMEL = rx(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# Any letter or digit, in any script, belongs to a segment: "Passwort", "contraseña", "пароль".
_SPLIT = rx(r"[\W_]+")

# The word for "password" in the languages a Helpline user's PC may speak, lower case and
# without spaces (a key "mot de passe" becomes "motdepasse"). Found anywhere in a key name.
PASSWORD_WORDS_WORLD = (
    "passwort",
    "kennwort",
    "passwörter",
    "kennwörter",
    "motdepasse",
    "motsdepasse",
    "contraseña",
    "contrasena",
    "contrasenya",
    "senha",
    "palavrapasse",
    "wachtwoord",
    "hasło",
    "haslo",
    "heslo",
    "lösenord",
    "losenord",
    "adgangskode",
    "passord",
    "salasana",
    "jelszó",
    "jelszo",
    "parola",
    "parolă",
    "şifre",
    "şifresi",
    "sifre",
    "geslo",
    "lozinka",
    "slaptažodis",
    "parool",
    "пароль",
    "пароля",
    "паролем",
    "парола",
    "лозинка",
    "κωδικός",
    "密码",
    "密碼",
    "口令",
    "パスワード",
    "暗証番号",
    "비밀번호",
    "암호",
    "סיסמה",
    "סיסמא",
    "كلمةالمرور",
    "كلمةالسر",
    "matkhau",
    "mậtkhẩu",
    "katasandi",
    "katalaluan",
    "पासवर्ड",
)

# Well-known environment variables and settings whose names contain a keyword but whose
# values are not secrets (the working directory, desktop session names, socket paths).
_BENIGN = frozenset(
    {
        "pwd",
        "oldpwd",
        "xdg_session_id",
        "desktop_session",
        "gdmsession",
        "ssh_auth_sock",
        "dbus_session_bus_address",
        "session_manager",
        "krb5ccname",
    }
)

# A last segment that says the value is metadata about a secret, not the secret.
_META_LAST = frozenset(
    """
    file files path dir directory length len policy prompt hint reset changed change required
    enabled enable disabled disable mode type types method methods authentication command cmd
    helper checker strength complexity history lifetime timeout ttl expiry expires expire
    expiration age days count attempts retries format name names user username login url uri
    urls endpoint host hostname server port realm domain provider plugin backend scheme stdin
    location size algorithm algorithms alg encoding field label description env var variable
    ref arn version at set less manager service store cache level source sources prefix
    keyring header flags flag encryption mgmt management
    """.split()
)
# Run-together names (``passwordfile``, ``tokentype``) end in one of these.
_META_SUFFIX = tuple(w for w in _META_LAST if len(w) >= 4)
# A segment anywhere that makes the value a number or a limit (``max_tokens``, ``pass_min_len``).
_META_ANY = frozenset({"max", "min", "num", "warn", "minimum", "maximum"})
# Words that contain a keyword but mean something else.
_NOT_KEYWORDS = ("tokeniz", "secretar", "passthrough", "bypass", "compass", "passive", "passenger")

_PASSWORD_SEGMENTS = frozenset(
    {"pass", "pwd", "pw", "psk", "passcode", "passwd", "password", "passwords", "passphrase", "mdp",
     *words.ABBREVIATED_PASSWORD_WORDS}
)
_PASSWORD_WORDS = ("password", "passwd", "passphrase", "passcode", *PASSWORD_WORDS_WORLD)
# Words written with combining marks (Devanagari's vowel signs are not letters to a regex): a key is split at
# them, so these are looked for in the whole key, spaces and punctuation aside.
_MARKED_WORDS = tuple(w for w in PASSWORD_WORDS_WORLD if not w.isalnum())
# Names that glue a qualifier to `pass` or `pw` (keytool -storepass, redis requirepass, LDAP bindpw).
_PASSWORD_COMPOUNDS = (
    "storepass",
    "keypass",
    "requirepass",
    "masterpass",
    "masterauth",
    "adminpass",
    "rootpass",
    "dbpass",
    "userpass",
    "bindpass",
    "authpass",
    "mailpass",
    "smtppass",
    "ftppass",
    "bindpw",
    "rootpw",
    "pgpass",  # PGPASS, as some scripts name PostgreSQL's password
    "authtok",  # SSSD's ldap_default_authtok, PAM's authtok
    "keymaterial",  # a Wi-Fi profile's <keyMaterial> (netsh wlan export profile key=clear)
    "adminpw",
    "dbpw",
)
_WEP_KEY = rx(r"wepkey\d*$")
# A qualifier glued to "key" makes an API/credential key (see words.KEY_QUALIFIERS); German "Schlüssel" too.
_KEY_QUALIFIERS = words.KEY_QUALIFIERS
_SCHLUESSEL = rx("(?:" + "|".join(words.SCHLUESSEL_QUALIFIERS) + ")[\\-_]?" + words.SCHLUESSEL)
_API_KEY = rx("(?:" + "|".join(_KEY_QUALIFIERS) + ")keys?")
_SESSION_SUFFIXES = ("sessionid", "sessid", "sessionkey", "sessioncookie")
_WEAK_TOKEN_LAST = frozenset({"auth", "bearer"})


def segments(key: str) -> list[str]:
    """Split a key name into lower-case words: ``keyStorePassword`` -> ``[key, store, password]``."""
    return [s for s in _SPLIT.split(_CAMEL.sub("_", key).lower()) if s]


def classify_key(key: str) -> str | None:
    """Return the detector name for a setting called ``key`` if its value is a secret, else None."""
    found = _classify(key)
    return None if found is None else found[0]


def container_kind(key: str) -> str | None:
    """Return the detector name if everything nested under ``key`` is secret too (``passwords:``, ``api_keys: [``).

    Only names that say "secret" outright qualify; ``auth:`` or ``session:`` blocks hold settings, not secrets.
    """
    found = _classify(key)
    return found[0] if found is not None and found[1] else None


def _classify(key: str) -> tuple[str, bool] | None:
    """Return (detector name, whether the name is a strong secret word) or None."""
    segs = segments(key)
    if not segs:
        return None
    joined = "_".join(segs)
    if joined in _BENIGN:
        return None
    compact = "".join(segs)
    if segs[-1] in _META_LAST or any(s in _META_ANY for s in segs):
        return None
    if compact.endswith(_META_SUFFIX) or any(w in compact for w in _NOT_KEYWORDS):
        return None
    if "secretaccesskey" in compact or (compact.startswith("aws") and "secret" in compact):
        return AWS_SECRET_KEY, True
    if "azure" in compact and "secret" in compact:
        return AZURE_CLIENT_SECRET, True
    if (
        any(s in _PASSWORD_SEGMENTS for s in segs)
        or any(w in compact for w in _PASSWORD_WORDS)
        or compact.endswith("pwd")
        or (_MARKED_WORDS and not key.isascii() and any(w in "".join(key.lower().split()) for w in _MARKED_WORDS))
        or compact.endswith(_PASSWORD_COMPOUNDS)
        or _WEP_KEY.search(compact)
        or (compact == "sshpass" and key.lstrip("$").isupper())  # SSHPASS, which `sshpass -e` reads
    ):
        return PASSWORD, True
    if "privatekey" in compact:
        return PRIVATE_KEY, True
    if compact.endswith(_SESSION_SUFFIXES) or compact in ("jsessionid", "phpsessid", "session"):
        return SESSION, False
    if "token" in compact:
        return TOKEN, True
    if "secret" in compact or "credential" in compact or segs[-1] in ("cred", "creds"):
        return SECRET, True
    if _API_KEY.search(compact) or _SCHLUESSEL.search(compact):
        return API_KEY, True
    if segs[-1] in ("cookie", "cookies") or compact.endswith("setcookie"):
        return COOKIE, False
    if segs[-1] in _WEAK_TOKEN_LAST:
        return TOKEN, False
    return None
