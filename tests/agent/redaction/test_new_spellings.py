"""A generated corpus in the spirit of the hidden one behind issue 9: each leak class, many spellings.

For every class (free-text passwords in many languages, password flags, ``.pgpass`` lines, vendor
keys, pass-phrases, URL passwords, keys with spaces or dashes, cut lines, legacy Windows files,
random tokens in a credential position) a generator writes lines in spellings and contexts the
planted corpus does not hold: case variants, separators, quotes, JSON/YAML/INI/env/XML/log/command
contexts, trailing punctuation, values with symbols and non-ASCII letters. Values are random but
drawn from fixed seeds, so a run is the same every time. No value, nor any 8-character piece of it,
may survive; a sample goes through the real ``helpline share --output`` as well.

The clean side: lines that only talk about passwords must come out unchanged.
"""

from __future__ import annotations

import io
import json
import os
import random
import string
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.diagnostics.context import _copy_capped
from agent.redaction import SCRUBBED, Redactor

ROOT = Path(__file__).resolve().parents[3]
ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"
B64 = ALNUM + "+/"
HEX = "0123456789abcdef"
# Symbols a password may hold wherever it is written bare (no quote, no space, nothing a shell or a
# setting would read as the end of the value).
SYMBOLS = "!#%&*+-?@^_~$.,:/"
LETTERS_ACCENTED = "éüößñçåøłž"


@dataclass(frozen=True)
class Case:
    """One line (or a few) holding secrets, and the values that must be gone."""

    klass: str
    text: str
    secrets: tuple[str, ...]


def _rand(rng: random.Random, alphabet: str, size: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(size))


def password(rng: random.Random, *, symbols: str = SYMBOLS, size: tuple[int, int] = (10, 22),
             accents: bool = False) -> str:
    """A password as people and generators make them: letters, a digit, some symbols, not starting
    or ending with punctuation (which reads as the sentence's, not the password's)."""
    n = rng.randint(*size)
    alphabet = ALNUM * 3 + symbols + (LETTERS_ACCENTED if accents else "")
    body = _rand(rng, alphabet, n - 3)
    return rng.choice(string.ascii_letters) + body[: n // 2] + rng.choice(string.digits) + body[n // 2 :] + \
        rng.choice(ALNUM)


def phrase(rng: random.Random, words: int) -> str:
    """A pass-phrase of invented lower-case words (never a status word such as "required")."""
    return " ".join(_rand(rng, "bcdfghjklmnprstvwz", 2) + _rand(rng, "aeiou", 1) + _rand(rng, "bcdfghklmnprstvz", 3)
                    for _ in range(words))


def leaks(case: Case, output: str) -> list[str]:
    """The secrets of ``case`` (or pieces of 8 characters and more) still in ``output``."""
    found = []
    for secret in case.secrets:
        pieces = [secret] if len(secret) < 8 else [secret[i : i + 8] for i in range(len(secret) - 7)]
        if " " in secret:
            pieces = [w for w in secret.split() if len(w) >= 5]
        if any(piece in output for piece in pieces):
            found.append(secret)
    return found


# --- the generators ------------------------------------------------------------------------------------

PASSWORD_WORDS = [
    "password", "Password", "PASSWORD", "passwd", "pwd", "PWD", "pass", "pw", "passcode", "pass phrase",
    "Passwort", "passwort", "Kennwort", "KENNWORT", "mot de passe", "Mot de passe", "mdp", "contraseña",
    "Contraseña", "clave", "senha", "Senha", "wachtwoord", "Wachtwoord", "hasło", "Hasło", "haslo", "parola",
    "Parola", "salasana", "Salasana", "lösenord", "Lösenord", "losenord", "heslo", "Heslo", "jelszó", "Jelszó",
    "пароль", "Пароль", "ПАРОЛЬ", "密码", "密碼", "パスワード", "비밀번호", "şifre", "Şifre", "passord", "adgangskode",
    "lozinka", "geslo", "κωδικός",
]  # fmt: skip
SEPARATORS = [": ", ":", "=", " = ", " is ", " IS ", " -> ", " => ", " : ", " was ", ":\t", "\t"]
LEADS = ["", "note: ", "2026-11-22 09:00:01 INFO ", "[ticket 4411] user says ", "# ", "- ", "  ", "Jan 3 10:00:00 pc app[42]: "]
TRAILS = ["", ".", ",", " ", " (temporary)", " - please change it", ";", "!"]


def free_text_passwords(rng: random.Random) -> Iterator[Case]:
    sentences = [
        "my {w} is {v}", "My {w} is {v}", "the {w} is {v}", "The new {w} is {v}", "{w} for the NAS is {v}",
        "your {w} has been set to {v}", "{w} changed to {v}", "temporary {w}: {v}", "{w} -> {v}",
        "the pass is {v}", "pass = {v}", "pw={v}", "pw: {v}", "PW {v}", "pwd: {v}", "passwd {v}", "pwd={v}",
        "Das Passwort lautet {v}", "Passwort ist {v}", "Kennwort: {v}", "le mot de passe est {v}",
        "mot de passe : {v}", "la contraseña es {v}", "a senha é {v}", "het wachtwoord is {v}",
        "hasło to {v}", "la parola è {v}", "salasana on {v}", "lösenordet är {v}", "heslo je {v}",
        "a jelszó {v}", "пароль: {v}", "Пароль - {v}", "密码是{v}", "密码：{v}", "パスワードは{v}",
        "パスワード：{v}", "비밀번호는 {v}", "şifre: {v}", "Şifresi {v}",
    ]
    for template in sentences:
        for _ in range(3):
            v = password(rng, accents=rng.random() < 0.2)
            lead, trail = rng.choice(LEADS), rng.choice(TRAILS)
            yield Case("free-text", lead + template.format(w=rng.choice(PASSWORD_WORDS), v=v) + trail, (v,))
    for word in PASSWORD_WORDS:
        for sep in rng.sample(SEPARATORS, 5):
            v = password(rng)
            lead, trail = rng.choice(LEADS), rng.choice(TRAILS)
            yield Case("free-text", f"{lead}{word}{sep}{v}{trail}", (v,))
        # Quoted, with spaces and symbols a bare value could not hold.
        v = password(rng, symbols=SYMBOLS + " ;")
        q = rng.choice(['"{}"', "'{}'", "“{}”", "«{}»", "`{}`"])
        yield Case("free-text", f"{rng.choice(LEADS)}{word}: {q.format(v)}", tuple(v.split()) if " " in v else (v,))
    # In structured text: JSON messages, YAML comments, XML text, a chat export.
    for _ in range(30):
        v = password(rng, symbols="!#%&*+-?@^_~$.:/")
        word = rng.choice(PASSWORD_WORDS)
        yield Case("free-text", json.dumps({"msg": f"{word} is {v}", "level": "info"}), (v,))
        yield Case("free-text", f"<note>{word}: {v}</note>", (v,))
        yield Case("free-text", f"[10:02] alex: {word} {rng.choice(['is', '=', ':'])} {v}", (v,))
    # PIN codes: digits after a PIN word and a separator.
    for template in ["PIN: {v}", "PIN = {v}", "pin code: {v}", "SIM PIN is {v}", "Your PIN is {v}.", "PIN-Code: {v}",
                     "PIN {v}", "pin={v}", "code PIN : {v}"]:
        for _ in range(3):
            v = _rand(rng, string.digits, rng.randint(4, 8))
            yield Case("pin", rng.choice(LEADS) + template.format(v=v), (v,))


def mysql_flags(rng: random.Random) -> Iterator[Case]:
    tools = ["mysql", "mysqldump", "mysqladmin", "mariadb", "mariadb-dump", "/usr/bin/mysql", "mysql.exe",
             r"C:\Program Files\MySQL\bin\mysql.exe", "mysqlimport", "mysqlcheck"]
    forms = ["-p{v}", "-p'{v}'", '-p"{v}"', "--password={v}", "--password='{v}'", '--password="{v}"',
             "--password {v}", "--pass={v}", "-p{v} ", "--password={v},"]
    for tool in tools:
        for form in forms:
            v = password(rng, symbols="!#%&*+-?@^_~.:/")
            flag = form.format(v=v)
            before = rng.choice(["", "-h db.internal ", "-u root ", "-uroot ", "--user=app -h 10.0.0.5 -P 3306 "])
            after = rng.choice(["", " mydb", " -e 'select 1'", " --all-databases > dump.sql", " 2>&1"])
            line = f"{tool} {before}{flag}{after}"
            yield Case("mysql", line, (v,))
            yield Case("mysql", f"root      4242  0.0  0.1 123456  7890 ?  S  09:00  0:00 {line}", (v,))
            yield Case("mysql", json.dumps({"cmdline": line.split(" "), "pid": 4242}), (v,))
            yield Case("mysql", f"2026-11-22 09:00:01 cron[77]: (root) CMD ({line})", (v,))
    for _ in range(10):
        v = password(rng, symbols="!#%&*+-?@^_~.")
        yield Case("mysql", f"MYSQL_PWD={v} mysql -u root", (v,))
        yield Case("mysql", f'"Args": ["/usr/sbin/mysqld", "--user=mysql", "--password={v}"]', (v,))
        yield Case("mysql", f"mysql -u root --password=\"{v}\" -h db", (v,))


def pgpass_lines(rng: random.Random) -> Iterator[Case]:
    hosts = ["db.internal", "*", "10.0.0.7", "localhost", "pg-01.corp.example", r"\:\:1", "[::1]", "db_prod"]
    for _ in range(80):
        v = password(rng, symbols="!#%&*+-?@^_~.$/")
        escaped = v
        if rng.random() < 0.5:
            # Colons and backslashes inside a field are escaped with a backslash.
            cut = rng.randint(1, len(v) - 1)
            escaped = v[:cut] + rng.choice([r"\:", "\\\\"]) + v[cut:]
        host = rng.choice(hosts)
        port = rng.choice(["5432", "*", "6432", "15432"])
        db = rng.choice(["app", "*", "warehouse", "my-db", "db.name"])
        user = rng.choice(["app", "postgres", "*", "etl_user", "svc.reporting", r"dom\\user"])
        line = f"{host}:{port}:{db}:{user}:{escaped}"
        pieces = tuple(p for p in escaped.replace("\\:", "\x00").replace("\\\\", "\x00").split("\x00") if len(p) >= 8)
        yield Case("pgpass", line + rng.choice(["", " ", "\r"]), pieces or (v,))
        yield Case("pgpass", f"cat ~/.pgpass\n{line}\n", pieces or (v,))


def _vendor_keys(rng: random.Random) -> list[tuple[str, str]]:
    """(name, value) of keys in their vendors' formats."""
    return [
        ("openai", "sk-proj-" + _rand(rng, B64URL, rng.choice([48, 64, 100, 156]))),
        ("openai", "sk-" + _rand(rng, ALNUM, 20) + "T3BlbkFJ" + _rand(rng, ALNUM, 20)),
        ("openai", "sk-" + _rand(rng, ALNUM, 48)),
        ("openai", "sk-svcacct-" + _rand(rng, B64URL, 74)),
        ("openai", "sk-admin-" + _rand(rng, B64URL, 60)),
        ("anthropic", "sk-ant-api03-" + _rand(rng, B64URL, 93) + "AA"),
        ("anthropic", "sk-ant-admin01-" + _rand(rng, B64URL, 93) + "AA"),
        ("sendgrid", "SG." + _rand(rng, B64URL, 22) + "." + _rand(rng, B64URL, 43)),
        ("twilio", "SK" + _rand(rng, HEX, 32)),
        ("twilio", "AC" + _rand(rng, HEX, 32)),
        ("github", "ghp_" + _rand(rng, ALNUM, 36)),
        ("github", "gho_" + _rand(rng, ALNUM, 36)),
        ("github", "ghs_" + _rand(rng, ALNUM, 36)),
        ("github", "github_pat_" + _rand(rng, ALNUM, 22) + "_" + _rand(rng, ALNUM, 59)),
        ("gitlab", "glpat-" + _rand(rng, B64URL, 20)),
        ("slack", "xoxb-" + _rand(rng, string.digits, 12) + "-" + _rand(rng, string.digits, 13) + "-" + _rand(rng, ALNUM, 24)),
        ("slack", "xoxp-" + "-".join(_rand(rng, string.digits, 12) for _ in range(3)) + "-" + _rand(rng, HEX, 32)),
        ("slack", "xoxa-2-" + _rand(rng, ALNUM, 40)),
        ("slack", "xoxs-" + _rand(rng, string.digits, 10) + "-" + _rand(rng, ALNUM, 30)),
        ("stripe", "sk_live_" + _rand(rng, ALNUM, rng.choice([24, 99]))),
        ("stripe", "rk_live_" + _rand(rng, ALNUM, 24)),
        ("stripe", "sk_test_" + _rand(rng, ALNUM, 24)),
        ("google", "AIza" + _rand(rng, B64URL, 35)),
        ("aws", rng.choice(["AKIA", "ASIA"]) + _rand(rng, string.ascii_uppercase + "234567", 16)),
        ("npm", "npm_" + _rand(rng, ALNUM, 36)),
        ("huggingface", "hf_" + _rand(rng, string.ascii_letters, 34)),
    ]  # fmt: skip


KEY_PLACES = [
    "{k}", "KEY={k}", "export OPENAI_API_KEY={k}", 'API_KEY="{k}"', "api_key: {k}", "api-key = {k}",
    '"apiKey": "{k}",', "<ApiKey>{k}</ApiKey>", '<add key="Token" value="{k}" />', "token = '{k}'",
    "2026-11-22 09:00:01 DEBUG using {k} for the request", "curl -H 'Authorization: Bearer {k}' https://api.x.io",
    "curl -H \"X-Api-Key: {k}\" https://api.x.io", "https://api.x.io/v1?key={k}&q=1", "[{k}]", "({k})", "{k}.",
    "{k},", "key={k};", "|{k}|", "\t{k}\t", "set TOKEN={k}", "$env:API_KEY = '{k}'", "- {k}", "value: >-\n  {k}",
]
TWILIO_TOKEN_PLACES = [
    "TWILIO_AUTH_TOKEN={t}", '"auth_token": "{t}"', "twilio auth token: {t}", "authToken = '{t}'",
    "Auth Token {t}", "TWILIO_API_SECRET={t}", "account_sid={sid} auth_token={t}", "-u {sid}:{t}",
    "client = Client('{sid}', '{t}')", "{sid} {t}", "sid: {sid}\ntoken: {t}",
]
AWS_SECRET_PLACES = [
    "aws_secret_access_key = {s}", "AWS_SECRET_ACCESS_KEY={s}", '"SecretAccessKey": "{s}"', "secret_key: {s}",
    "aws configure set aws_secret_access_key {s}", "AWS_SECRET_KEY: {s}", "SecretKey={s}",
    "Access key ID,Secret access key\n{a},{s}", "aws_access_key_id={a} aws_secret_access_key={s}",
    "  secretAccessKey: '{s}'", "<SecretAccessKey>{s}</SecretAccessKey>",
]
AZURE_PLACES = [
    "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={s};EndpointSuffix=core.windows.net",
    "AccountKey={s}", '"accountKey": "{s}"', "AZURE_STORAGE_KEY={s}", "account_key = {s}",
    "az storage blob list --account-key {s}", "storage key: {s}",
]


def vendor_keys(rng: random.Random) -> Iterator[Case]:
    for _ in range(6):
        for name, value in _vendor_keys(rng):
            place = rng.choice(KEY_PLACES)
            yield Case(f"key-{name}", place.format(k=value), (value,))
    for place in TWILIO_TOKEN_PLACES:
        for _ in range(3):
            sid, t = "AC" + _rand(rng, HEX, 32), _rand(rng, HEX, 32)
            yield Case("key-twilio-token", place.format(t=t, sid=sid), (sid, t))
    for place in AWS_SECRET_PLACES:
        for _ in range(3):
            a = "AKIA" + _rand(rng, string.ascii_uppercase + "234567", 16)
            s = _rand(rng, B64, 40)
            yield Case("key-aws-secret", place.format(s=s, a=a), (a, s))
    for place in AZURE_PLACES:
        for _ in range(3):
            s = _rand(rng, B64, 86) + "=="
            yield Case("key-azure", place.format(s=s), (s,))


def pass_phrases(rng: random.Random) -> Iterator[Case]:
    places = [
        "wifi psk: password = {v}", "WiFi PSK: passphrase = {v}", "wpa passphrase: {v}", "psk: {v}", 'psk="{v}"',
        "wpa-psk {v}", "Wi-Fi password : {v}", "wlan key: {v}", "network key = {v}", "Password: {v}",
        "password = {v}", "    passphrase: {v}", "Passwort = {v}", "mot de passe = {v}", "pass phrase: {v}",
        "Security key: {v}", "Key Content            : {v}", "  wpa_passphrase={v}", "wifi_password: '{v}'",
        "guest wifi -- password = {v}", "router admin password: {v}", "WLAN-Schlüssel: {v}",
        "Kennwort : {v}", "pre-shared key: {v}", "secret phrase = {v}",
    ]
    for place in places:
        for _ in range(4):
            v = phrase(rng, rng.randint(2, 5))
            yield Case("pass-phrase", place.format(v=v) + rng.choice(["", " ", "\r"]), (v,))


def url_passwords(rng: random.Random) -> Iterator[Case]:
    schemes = ["postgres", "postgresql", "https", "http", "mysql", "amqp", "redis", "mongodb+srv", "smb", "ftp", "sftp",
               "ldap", "jdbc:postgresql", "git+https", "socks5"]
    hosts = ["db.internal:5432/app", "10.0.0.3/", "[fd00::1]:6379/0", "nas.local", "h.example.com/x?y=1#z",
             "proxy:3128", "github.com/org/repo.git", "cluster0.ab1cd.mongodb.net/?retryWrites=true"]
    specials = ["#", "@", "%40", ":", "#@", "@:", "%23", "?", "/", "%3A", "!", "&", ";", "=", "'", "%25"]
    places = ["{u}", "url={u}", "DATABASE_URL='{u}'", '"dsn": "{u}",', "connecting to {u} ...", "<url>{u}</url>",
              "origin\t{u} (fetch)", "proxy = {u}", "git clone {u}", "[{u}]", "({u})", "{u}.", "  uri: \"{u}\""]
    for _ in range(160):
        left = password(rng, symbols="-_.~!$*", size=(4, 10))
        right = password(rng, symbols="-_.~!$*", size=(4, 10))
        special = rng.choice(specials)
        if rng.random() < 0.3:
            special += rng.choice(specials)
        pw = left + special + right
        user = rng.choice(["user", "admin", "svc-app", "me%40corp.com", "app.user", "u"])
        u = f"{rng.choice(schemes)}://{user}:{pw}@{rng.choice(hosts)}"
        place = rng.choice(places)
        if "'" in special and "'" in place:
            continue
        if '"' in place and '"' in pw:
            continue
        yield Case("url-password", place.format(u=u), (pw, left, right) if min(len(left), len(right)) >= 8 else (pw,))


def spaced_keys(rng: random.Random) -> Iterator[Case]:
    keys = ["secret key", "Secret Key", "api-key", "API-Key", "Client Secret", "client secret", "Admin Password",
            "access-token", "Access Token", "auth token", "DB Password", "db-password", "app secret", "private-token",
            "refresh token", "x-api-key", "X-Auth-Token", "Private-Token", "Ocp-Apim-Subscription-Key",
            "X-Vault-Token", "service account key", "encryption key", "master key", "License Key", "session token",
            "bot token", "webhook secret", "signing secret", "root password", "bind password", "SMTP password"]
    forms = ["{k}: '{v}'", '{k}: "{v}"', "{k}: {v}", "{k} = {v}", "{k}={v}", '{k} = "{v}"', '"{k}": "{v}"',
             "'{k}' => '{v}'", "  {k}: {v}", "{k} : {v}", "{k}:\t{v}", "{k} -> {v}", "- {k}: {v}",
             '"{k}" = "{v}"', "{k}\t= {v}"]
    for key in keys:
        for form in rng.sample(forms, 8):
            v = password(rng, symbols="!#%&*+-?@^_~.:/")
            yield Case("spaced-key", form.format(k=key, v=v), (v,))


def _capped(content: bytes, cap: int) -> str:
    out = io.BytesIO()
    _copy_capped(io.BytesIO(content), out, len(content), cap, True)
    return out.getvalue().decode("utf-8")


CAP = 4096
HEAD_BUDGET = int((CAP - 160) * 0.25)  # as the collectors cut: a quarter head, the rest tail
TAIL_BUDGET = (CAP - 160) - HEAD_BUDGET


def cut_lines(rng: random.Random) -> Iterator[Case]:
    keys = ["password=", "Passwort: ", "api-key = ", "secret key: ", "token ", "pwd ", "mysql -p", "-pass ",
            "https://u:", "the password is ", "Bearer ", "sk-proj-", "ghp_", "SG.", "AKIA", "glpat-"]
    for _ in range(80):
        key = rng.choice(keys)
        secret = _rand(rng, ALNUM, 40)
        if key == "AKIA":
            secret = _rand(rng, string.ascii_uppercase + "234567", 16)
        tail = "@db.internal/app " if key.startswith("https") else " "
        if rng.random() < 0.5:
            cut = rng.randint(-6, len(secret))
            pad = HEAD_BUDGET - len(key) - cut
            line = "x" * max(pad, 0) + " " + key + secret + tail + "words " + "y" * 6000
            line = line[1:] if pad >= 0 else line
            text = _capped(line.encode(), CAP)
        else:
            cut = rng.randint(1, len(secret) - 1)
            suffix = tail + "end of line " + "e" * (TAIL_BUDGET - (len(secret) - cut) - len(tail) - 12)
            text = _capped(("first line\n" + "z" * 3000 + " " + key + secret + suffix).encode(), CAP)
        yield Case("cut-line", text, (secret,))


def high_entropy_positions(rng: random.Random) -> Iterator[Case]:
    forms = [
        "mytool secret {v}", "using token {v} for upload", "apikey {v}", "auth {v}", "credential: {v}",
        "https://{v}@github.com/org/repo.git", "git clone https://x-access-token:{v}@github.com/o/r",
        "tool --pw {v}", "tool -pass {v}", "tool /pwd:{v}", "app --passwd={v}", "app -password {v}",
        "connect --secret {v}", "login --token={v}", "client --api-key {v}", "restic -p {v}",
        "psql 'host=db password={v} user=x'", "Server=db;User Id=sa;Pwd={v};", "key: {v}  # prod",
        "TOKEN    {v}", "passkey {v}", "Bearer realm=x token={v}", "the key is {v}", "code={v}&state=xyz",
        "access_token={v}&expires_in=3600", "X-Amz-Signature={v}", "signature: {v}",
    ]
    for form in forms:
        for _ in range(3):
            v = _rand(rng, ALNUM, rng.randint(24, 48))
            while not (any(c.isdigit() for c in v) and any(c.isupper() for c in v) and any(c.islower() for c in v)):
                v = _rand(rng, ALNUM, rng.randint(24, 48))
            yield Case("high-entropy", form.format(v=v), (v,))


# Spellings a later search found leaking: the kind or owner of the password between the word and the value, verbs
# and spaces of more languages, compounds, the value before the word, a secret after its key id, terminal colours,
# JSON-escaped and multi-host URLs, Markdown, YAML block values under spaced keys, decomposed letters.
TOLD_SENTENCES = [
    "{w} (case sensitive): {v}", "{w} nuova: {v}", "{w} nueva: {v}", "{w} nova: {v}", "{w} Wi-Fi : {v}",
    "{w} WLAN: {v}", "{w} du wifi : {v}", "{w} del wifi è {v}", "{w} del router es {v}", "{w} do wifi é {v}",
    "{w} od routera: {v}", "{w} от роутера {v}", "{w} für den Drucker lautet {v}", "{w} for the guest wifi: {v}",
    "{w} был {v}", "{w} будет {v}", "{w} такой: {v}", "{w} brzmi {v}", "{w} wynosi {v}", "mon {w} c'est {v}",
    "la {w} e' {v}", "{w} sarà {v}", "{w} fue {v}", "{w} foi {v}", "{w}\u00a0: {v}", "{w}\u202f: {v}",
    "{w}\u200b: {v}", "Root-{w} lautet {v}", "Admin-{w} ist {v}", "WLAN-{w}: {v}", "my pass word is {v}",
    "P/W: {v}", "p/w {v}", "{v} is the new {w}", "{v} ist das neue {w}", "{v} est le nouveau {w}",
    "{v} es la nueva {w}", "{v} is the {w}, thx", "<text>{v} is the new {w}</text>",
]
TOLD_WORDS = ["password", "Password", "PASSWORD", "Passwort", "Kennwort", "mot de passe", "contraseña", "senha",
              "hasło", "пароль", "Пароль", "parola d'ordine", "wachtwoord"]  # fmt: skip
ANSI_COLOURS = ["\x1b[32m", "\x1b[1;31m", "\x1b[0m", "\x1b[38;5;208m"]


def told_passwords(rng: random.Random) -> Iterator[Case]:
    for template in TOLD_SENTENCES:
        for _ in range(3):
            v = password(rng, symbols="!#%&*+-?@^_~$.:", accents=rng.random() < 0.2)
            line = template.format(w=rng.choice(TOLD_WORDS), v=v)
            yield Case("told", rng.choice(LEADS) + line + rng.choice(["", ".", " ", " thx"]), (v,))
            # As a JSON log writes it by default: every letter outside ASCII as a \\u escape.
            v = password(rng, symbols="!#%&*+-?@^_~$.:")
            message = template.format(w=rng.choice(TOLD_WORDS), v=v).replace("\x1b", "")
            yield Case("told-json", json.dumps({"level": "info", "msg": message}), (v,))
    for _ in range(6):
        sid, t = "AC" + _rand(rng, HEX, 32), _rand(rng, HEX, 32)
        yield Case("told-twilio", f"the twilio auth token for {sid} is {t}", (sid, t))
        a, k = "AKIA" + _rand(rng, string.ascii_uppercase + "234567", 16), _rand(rng, B64, 40)
        yield Case("told-aws", f"AWS creds: {a} {rng.choice(['/', ' / ', ':', ' | '])} {k}".replace("  ", " "), (a, k))
        v = phrase(rng, rng.randint(3, 5))
        yield Case("told-wifi", rng.choice(["WPA2 key = {v}", "Wi-Fi key (WPA2): {v}", "WPA3 key: {v}",
                                            "wifi key: {v}", "WEP key = {v}"]).format(v=v), (v,))
        token_value = "ghp_" + _rand(rng, ALNUM, 36)
        on, off = rng.choice(ANSI_COLOURS), "\x1b[0m"
        yield Case("told-ansi", f"{on}{token_value}{off}", (token_value,))
        pw = password(rng, symbols="-_.~!$*")
        yield Case("told-ansi", f"{on}password:{off} {pw}", (pw,))
        pw = password(rng, symbols="-_.~!$*;")
        yield Case("told-url", json.dumps({"url": f"https://u:{pw}@host.example/x"}).replace("/", "\\/"), (pw,))
        yield Case("told-url", f"mongodb://app:{pw}@h1:27017,h2:27017,h3:27017/db?replicaSet=rs0", (pw,))
        yield Case("told-url", f"mongodb://app:{pw}@h1,h2,h3/db", (pw,))
        v = password(rng, symbols="!#%&*+-?@^_~.")
        key = rng.choice(["DB PASSWORD", "db password", "Client Secret", "API TOKEN", "secret key"])
        yield Case("told-markdown", f"**{key}:** {v}", (v,))
        yield Case("told-yaml", f"{key}: {rng.choice(['|', '>-', '|-', '>'])}\n  {v}", (v,))
        indent = rng.choice(["", "  "])
        yield Case("told-yaml", f"{indent}? {rng.choice([key, repr(key)])}\n{indent}: {v}", (v,))
        yield Case("told-env", f"$ SSHPASS={v} sshpass -e ssh web1", (v,))
        yield Case("told-env", f"cred={v}", (v,))
        v = password(rng, symbols="!#%&*+-?@^_~.")
        yield Case("told-nfd", f"{rng.choice(LEADS)}contrasen\u0303a: {v}", (v,))
        v = password(rng, symbols="!#%&*+-?^_~.")
        argv = rng.choice([["curl", "-sS", "-u", f"admin:{v}", "https://x"], ["curl", "--user", f"alex:{v}", "https://x"],
                           ["smbclient", "-U", f"alex%{v}", "//srv/share"], ["mysqlsh", "--uri", f"root:{v}@localhost:3306"],
                           ["transmission-remote", "-n", f"admin:{v}", "-l"], ["rar", "a", f"-hp{v}", "a.rar", "dir"]])
        yield Case("told-argv", json.dumps({"pid": 4242, "cmdline": argv}), (v,))
        yield Case("told-argv", "$ " + " ".join(argv), (v,))
        secret = rng.choice([phrase(rng, rng.randint(2, 4)), password(rng, symbols="!#%&*+-?@^_~.")])
        asked = rng.choice(["security find-generic-password -wa HomeNet",
                            'security find-generic-password -D "AirPort network password" -a HomeNet -w',
                            "security find-internet-password -s nas.local -w"])
        yield Case("told-keychain", f"{rng.choice(['$ ', '% ', 'alex@mac ~ % '])}{asked}\n{secret}\n$ exit", (secret,))
        left, right = password(rng, symbols="-_.~", size=(8, 12)), password(rng, symbols="-_.~", size=(8, 12))
        encoded = f"https%3A%2F%2Falex%3A{left}{rng.choice(['%2523', '%2540', '%253A', '%21'])}{right}%40host.example%2Fx"
        yield Case("told-url", f"GET /login?next={encoded} HTTP/1.1", (left, right))
        v = password(rng, symbols="!#%&*+-?@^_~.")
        yield Case("told", f"{rng.choice(LEADS)}{rng.choice(TOLD_WORDS)}, {v}{rng.choice(['', ';', ' - pls change'])}", (v,))
        token_value = _rand(rng, ALNUM, rng.randint(24, 44))
        yield Case("told-flag", f"{rng.choice(['-k', '-P', '--key', '--token', '-p'])} {token_value}", (token_value,))


GENERATORS: dict[str, Callable[[random.Random], Iterator[Case]]] = {
    "free-text": free_text_passwords,
    "mysql": mysql_flags,
    "pgpass": pgpass_lines,
    "vendor-keys": vendor_keys,
    "pass-phrases": pass_phrases,
    "url-passwords": url_passwords,
    "spaced-keys": spaced_keys,
    "cut-lines": cut_lines,
    "high-entropy": high_entropy_positions,
    "told": told_passwords,
}
SEEDS = (9, 19, 29)


def cases(name: str, seed: int, generators: dict[str, Callable[[random.Random], Iterator[Case]]] | None = None,
          ) -> list[Case]:
    """The cases ``name``'s generator (in ``generators``, default this module's) makes from ``seed``."""
    return list((generators or GENERATORS)[name](random.Random(f"{name}-{seed}")))


def _leaking(all_cases: list[Case], redact: Callable[[str], str]) -> list[str]:
    found = []
    for case in all_cases:
        output = redact(case.text + "\n")
        missed = leaks(case, output)
        if missed:
            found.append(f"{case.klass}: {case.text[:160]!r} -> {output[:200]!r} (left {missed})")
    return found


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_no_generated_secret_survives_redaction(name, seed):
    redactor = Redactor()
    generated = cases(name, seed)
    assert len(generated) >= 40
    found = _leaking(generated, lambda text: redactor.redact_text(text)[0])
    assert not found, f"{len(found)} of {len(generated)} leak:\n" + "\n".join(found[:40])


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_redacting_the_generated_output_again_changes_nothing(name):
    redactor = Redactor()
    for case in cases(name, SEEDS[0]):
        once = redactor.redact_text(case.text + "\n")[0]
        assert redactor.redact_text(once)[0] == once, case.text


# --- files as Windows writes them ----------------------------------------------------------------------


def _windows_lines(rng: random.Random) -> list[Case]:
    """Lines for a legacy Windows file: the passwords hold letters of the code page (é, ü, ß, €)."""
    picked = []
    for name in ("free-text", "spaced-keys", "pass-phrases", "url-passwords"):
        picked += rng.sample(cases(name, SEEDS[1]), 12)
    for case in rng.sample(picked, 20):
        v = password(rng, symbols="!#%&*+-?@^_~") + rng.choice("éüß€äö")
        picked.append(Case("windows", f"Kennwort: {v}", (v,)))
    return picked


@pytest.mark.parametrize(("codec", "bom"), [("cp1252", b""), ("utf-16-le", b"\xff\xfe"), ("utf-8", b"\xef\xbb\xbf")])
def test_legacy_windows_files_are_scrubbed_not_dropped(codec, bom, tmp_path):
    rng = random.Random(f"windows-{codec}")
    picked = [c for c in _windows_lines(rng) if _encodable(c.text, codec)]
    text = "".join(case.text + "\r\n" for case in picked)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "app.log").write_bytes(bom + text.encode(codec))
    redactor = Redactor()
    (result,) = redactor.redact_tree(tmp_path / "in", tmp_path / "out")
    assert result.status == SCRUBBED, result
    raw = (tmp_path / "out" / "app.log").read_bytes()
    assert raw.startswith(bom)
    output = raw[len(bom) :].decode(codec)
    assert output.count("\r\n") == text.count("\r\n")
    found = [f"{c.text!r} (left {leaks(c, output)})" for c in picked if leaks(c, output)]
    assert not found, "\n".join(found)
    assert redactor.verify_tree(tmp_path / "out") == []


def _encodable(text: str, codec: str) -> bool:
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


# --- the clean side ------------------------------------------------------------------------------------

CLEAN_LINES = [
    "Nov 22 09:00:01 pc passwd[4242]: password changed for alex",
    "passwd: files systemd",
    "pwd /home/alex/projects",
    "Kennwort geändert",
    "PASS tests/agent/test_share.py::test_share_to_a_file",
    "first pass done in 2.5s, second pass started",
    "pass 2 of 3: copying files",
    "GPIO pin 17 set high",
    "pin: 23",
    "Enter PIN:",
    "PIN required",
    "the key is missing from the keyring",
    "key: ssh-ed25519",
    "Security key: not present",
    "router admin password: not set",
    "signature: valid",
    "code=200 state=ok",
    "https://example.com/docs/section.html#passwords",
    "ssh -p 2222 alex@nas.local",
    "mysql -P 3306 -h db.internal -u app",
    '["mysql", "-P", "3306", "-h", "db.internal"]',
    "pw -> see the password manager",
    "contraseña cambiada",
    "das Passwort ist abgelaufen",
    # Words around the word for a password that say what it is, not what it is set to.
    "abc1 is the password manager",
    "Password rules:\n  - at least 8 characters",
    "sshpass: invalid option -- 'x'",
    "Mot de passe Wi-Fi : (masqué)",
    "password reset: done",
    "contraseña nueva: requerida",
    "This is the password.",
    "Das Root-Passwort ist abgelaufen",
    "\x1b[31merror\x1b[0m password expired",
    "\x1b[1mpassword:\x1b[0m required",
    "Passwort für den Drucker ist abgelaufen",
    "the mongodb://h1:27017,h2:27017/db?replicaSet=rs0 cluster",
    "see https://example.com/a@b,c",
    "Kennwort für WLAN geändert",
    "contrasen\u0303a cambiada",
    "sesión iniciada por José",
    # The value read from somewhere else, and a state that changes.
    "password: ${DB_PASSWORD}",
    "db password: ${DB_PASS}",
    "password = os.environ['DB_PASSWORD']",
    'password = os.getenv("DB_PASSWORD")',
    "const pwd = process.env.DB_PASS;",
    "device (wlp2s0): state change: need-auth -> prepare (reason 'none')",
    "mysqlsh --uri root@localhost:3306",
    "? what is the password\n: see the wiki",
    "Is the password set?\n: yes",
    "$ security find-generic-password -wa Nope\nsecurity: SecKeychainSearchCopyNext: The specified item could not be found.",
    "security find-generic-password -a alex -s mail\nkeychain: \"/Users/alex/Library/Keychains/login.keychain-db\"",
    "curl -k https://example.com/a1B2c3D4e5F6g7H8",
    "GET /r?u=https%3A%2F%2Fexample.com%2Fa%40b HTTP/1.1",
    "password, username and email are required",
    "Enter password, then press OK",
]


@pytest.mark.parametrize("line", CLEAN_LINES)
def test_lines_that_only_talk_about_passwords_stay(line):
    assert Redactor().redact_text(line + "\n") == (line + "\n", {})


# --- through the real share ----------------------------------------------------------------------------


# Classes whose lines are still whole secrets behind a log line's prefix (a .pgpass line or a pass-phrase
# setting is one only at the start of its line).
IN_ERROR_LINES = ("free-text", "high-entropy", "mysql", "url-passwords", "vendor-keys")


def _share_sample() -> list[tuple[str, Case]]:
    rng = random.Random("share-sample")
    picked: list[tuple[str, Case]] = []
    for name in sorted(GENERATORS):
        if name != "cut-lines":  # a cut line is a file of its own: the collectors cap long lines, not logs
            picked += [(name, case) for case in rng.sample(cases(name, SEEDS[2]), 15)]
    return picked


def test_a_sample_through_the_real_share_leaves_nothing_in_the_bundle(tmp_path):
    """A log made of generated lines, some of them errors (so they become top errors with an example),
    collected by `helpline share --output`: no value is in any file of the bundle, summary.json and
    report.html included."""
    picked = _share_sample()
    logs = tmp_path / "logs"
    logs.mkdir()
    with open(logs / "app.log", "w", encoding="utf-8", newline="") as out:
        for n, (name, case) in enumerate(picked):
            out.write(case.text + "\n")
            if name in IN_ERROR_LINES and "\n" not in case.text:
                out.write(f"2026-11-22 09:00:{n % 60:02d} ERROR sync failed: {case.text}\n")
    windows = _windows_lines(random.Random("share-windows"))
    (logs / "legacy.log").write_bytes("".join(c.text + "\r\n" for c in windows if _encodable(c.text, "cp1252"))
                                      .encode("cp1252"))
    (logs / "unicode.log").write_bytes(b"\xff\xfe" + "".join(c.text + "\r\n" for c in windows).encode("utf-16-le"))
    texts = {name: data.decode("utf-16" if data[:2] == b"\xff\xfe" else "cp1252", "replace")
             if not _is_utf8(data) else data.decode("utf-8")
             for name, data in share_bundle_files(tmp_path, logs, "mail broken").items()}
    names = " ".join(texts)
    assert "summary.json" in names and "report.html" in names and "app.log" in names
    assert "legacy.log" in names and "unicode.log" in names, "legacy Windows files are scrubbed, not dropped"
    summary = next(text for name, text in texts.items() if name.endswith("summary.json"))
    assert "sync failed" in summary, "the error lines became top errors"
    found = []
    for case in [*(case for _, case in picked), *windows]:
        for name, text in texts.items():
            for value in leaks(case, text):
                found.append(f"{name}: {value!r} from {case.text[:100]!r}")
    assert not found, "\n".join(found[:40])


def share_bundle_files(tmp_path: Path, logs: Path, what: str) -> dict[str, bytes]:
    """Run the real `helpline share --output` with the logs in ``logs`` (the slowest collectors left out) in a
    PC of its own under ``tmp_path``; return every file of the bundle by its name in the archive."""
    target = tmp_path / "bundle.tar.gz"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path / "home"),
           "HELPLINE_CONFIG_DIR": str(tmp_path / "config"), "HELPLINE_AGENT_DIR": str(tmp_path / "agent"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from cli.main import main; main(sys.argv[1:])", "share", "--yes",
         "--output", str(target), "--what", what, "--since", "today", "--tried", "nothing",
         "--logs", str(logs / "*.log"), "-x", "processes", "-x", "software", "-x", "crashes", "-x", "hardware"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    files: dict[str, bytes] = {}
    with tarfile.open(target) as archive:
        for member in archive.getmembers():
            if member.isfile():
                files[member.name] = archive.extractfile(member).read()  # type: ignore[union-attr]
    return files


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
