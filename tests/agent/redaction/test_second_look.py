"""The final check's second look (agent/redaction/second_look.py): it flags secrets in credential
positions in many spellings and with fresh random values, and stays quiet on the clean corpus and on
what the first pass has already redacted."""

from __future__ import annotations

import secrets
import string

import pytest

from agent.redaction import Redactor
from agent.redaction.second_look import KINDS, looks_random, scan_line, scan_text
from tests.agent.redaction.corpus_manifest import CORPUS

CLEAN = sorted((CORPUS / "clean").glob("*/*.txt"))
SECRET_FILES = sorted(p for p in (CORPUS / "secrets").iterdir() if p.is_file())


def _random_password(length: int = 14) -> str:
    """A fresh password each run, with the character classes a generator gives."""
    rng = secrets.SystemRandom()
    chars = [rng.choice(string.ascii_lowercase), rng.choice(string.ascii_uppercase), rng.choice(string.digits),
             rng.choice("!#%+^~")]
    chars += [rng.choice(string.ascii_letters + string.digits) for _ in range(length - len(chars))]
    rng.shuffle(chars)
    return "".join(chars)


TEMPLATES = [
    ("my password is {}", "keyword-value"), ("pwd: {}", "keyword-value"), ("passwd {}", "keyword-value"),
    ("Passwort: {}", "keyword-value"), ("Das Kennwort ist {}", "keyword-value"),
    ("mot de passe : {}", "keyword-value"), ("contraseña: {}", "keyword-value"), ("пароль: {}", "keyword-value"),
    ("wachtwoord = {}", "keyword-value"), ("hasło: {}", "keyword-value"), ("secret key: '{}'", "keyword-value"),
    ("TWILIO_AUTH_TOKEN={}", "keyword-value"), ("mysql -u root -p{} shop", "password-flag"),
    ("net use Z: \\\\srv\\share /p:{}", "password-flag"), ("pg_dump --password={} db", "password-flag"),
    ("db.internal:5432:shop:alice:{}", "colon-file"), ("https://bob:{}@files.example.com/x", "url-password"),
]


@pytest.mark.parametrize(("template", "kind"), TEMPLATES, ids=[t for t, _ in TEMPLATES])
def test_secrets_in_credential_positions_are_flagged(template, kind):
    for _ in range(5):
        line = "Mar 02 08:00:01 pc42 app[3000]: " + template.format(_random_password())
        assert kind in scan_line(line), line


KEY_MAKERS = {  # fresh random values each run, named so that every test worker collects the same tests
    "openai": lambda: "sk-proj-" + secrets.token_urlsafe(36),
    "anthropic": lambda: "sk-ant-api03-" + secrets.token_urlsafe(60),
    "sendgrid": lambda: "SG." + secrets.token_urlsafe(16) + "." + secrets.token_urlsafe(32),
    "twilio": lambda: "AC" + secrets.token_hex(16),
    "github": lambda: "ghp_" + secrets.token_hex(18),
    "slack": lambda: "xoxb-" + secrets.token_hex(12),
    "aws": lambda: "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
}


@pytest.mark.parametrize("maker", KEY_MAKERS.values(), ids=KEY_MAKERS.keys())
def test_key_formats_are_flagged_wherever_they_stand(maker):
    key = maker()
    assert "known-key-format" in scan_line(f"loaded config value {key} for the mailer")


@pytest.mark.parametrize("value", ["Bearer", "never", "cl100k_base", "/run/secrets/db", "1:4.13+dfsg1-1+b1",
                                   "redis01:6380", "DefaultEndpointsProtocol", "${DB_PASSWORD}", "********",
                                   "[REDACTED:password]", "user-3", "GetWindowsVersion2"])
def test_ordinary_values_do_not_look_random(value):
    assert not looks_random(value)


@pytest.mark.parametrize("path", CLEAN, ids=lambda p: p.name)
def test_the_clean_corpus_gives_the_second_look_nothing(path):
    assert scan_text(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", SECRET_FILES, ids=lambda p: p.name)
def test_the_second_look_agrees_with_the_first_pass_on_the_secrets_corpus(path, tmp_path):
    # Everything the first pass redacts stays quiet; what the second look still sees would be a leak.
    out = tmp_path / path.name
    Redactor().redact_file(path, out)
    if out.exists():
        assert scan_text(out.read_text(encoding="utf-8", errors="replace")) == []


def test_second_look_knows_its_kinds():
    assert len(KINDS) == len(set(KINDS)) >= 6


def test_text_whose_length_changes_when_lowered_is_scanned_line_by_line():
    # "İ" lowers to two characters: offsets in the lowered text no longer point into the text.
    text = "İstanbul office\nmy password is " + _random_password() + "\n"
    assert scan_text(text) == [(2, "keyword-value")]
