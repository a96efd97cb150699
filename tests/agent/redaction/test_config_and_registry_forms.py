"""Passwords in the forms config files, the registry and Windows' own tools write them, beyond `key = value`:

- a space-separated directive (``bindpw X`` in ldap.conf/nslcd.conf, ``rootpw X`` in slapd.conf,
  ``smtp_pass X``, ``AuthPass X``, SSSD's ``ldap_default_authtok``);
- ``reg query`` output (``DefaultPassword    REG_SZ    X``: Winlogon's automatic logon);
- a Wi-Fi profile's ``<keyMaterial>`` and netsh's "Key Content" label in Windows' languages;
- an ODBC connection string's value in braces (``Pwd={a;b}}c}``).

Each gets fresh random values; the first pass replaces them, the second look (the final check on its own)
sees them, and the look-alikes (a package list, sshd_config switches, other registry values, a date in
a password-expiry element) stay as they are.
"""

from __future__ import annotations

import secrets
import string

import pytest

from agent.redaction import Redactor
from agent.redaction.second_look import looks_random, scan_line


def _password() -> str:
    rng = secrets.SystemRandom()
    chars = [rng.choice(string.ascii_lowercase), rng.choice(string.ascii_uppercase), rng.choice(string.digits),
             rng.choice("!#%+^~")]
    chars += [rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(6, 18))]
    rng.shuffle(chars)
    return "".join(chars)


FORMS = (
    "bindpw {v}",
    "rootpw {v}",
    "\tbindpw\t{v}",
    "smtp_pass {v}",
    "imap_password \"{v}\"",
    "AuthPass {v}",
    "ldap_default_authtok = {v}",
    "authtok: {v}",
    "    DefaultPassword    REG_SZ    {v}",
    "    AltDefaultPassword    REG_EXPAND_SZ    {v}",
    "    ProxyPassword    REG_SZ    {v}",
    "<keyMaterial>{v}</keyMaterial>",
    "            <KeyMaterial>{v}</KeyMaterial>",
    '"keyMaterial": "{v}"',
    "    Key Content            : {v}",
    "    Schlüsselinhalt        : {v}",
    "    Contenu de la clé      : {v}",
    "    Contenido de la clave  : {v}",
    "    Содержимое ключа       : {v}",
    "Driver={{ODBC Driver 18 for SQL Server}};Server=db;Uid=sa;Pwd={{{v}}};",
    "DSN=crm;UID=sa;PWD={{{v}}}",
    'conn = "Server=db;Database=crm;User Id=sa;Password={{{v}}};"',
)

SECOND_LOOK_FORMS = (
    "<Password>{v}</Password>",
    "<AdminPassword>{v}</AdminPassword>",
    '<add key="DbPassword" value="{v}" />',
    "<ns:Password xmlns:ns=\"urn:x\">{v}</ns:Password>",
    *FORMS,
)

LOOK_ALIKES = (
    "SecretStorage      3.3.3",
    "password changed",
    "auth_token expired",
    "session_timeout 30",
    "password_file /etc/ldap.secret",
    "PasswordAuthentication no",
    "PermitEmptyPasswords no",
    "KbdInteractiveAuthentication yes",
    "    DefaultUserName    REG_SZ    bob",
    "    AutoAdminLogon    REG_SZ    1",
    "    PasswordExpiryWarning    REG_DWORD    0x5",
    "    Content-Type: text/plain",
    "Contenu de la page : accueil",
    "password={password}",
    "password={}",
    "<PasswordExpires>2026-12-03T10:00:00Z</PasswordExpires>",
    '<add key="PasswordLength" value="12" />',
)


@pytest.mark.parametrize("form", FORMS)
def test_the_first_pass_replaces_the_value(form):
    for _ in range(4):
        value = _password()
        line = form.format(v=value) + "\n"
        out = Redactor().redact_text(line)[0]
        assert value not in out and "[REDACTED:" in out, out


@pytest.mark.parametrize("form", SECOND_LOOK_FORMS)
def test_the_second_look_alone_sees_the_value(form):
    for _ in range(4):
        line = form.format(v=_password())
        assert scan_line(line), line


@pytest.mark.parametrize("line", LOOK_ALIKES)
def test_look_alikes_stay_as_they_are(line):
    assert Redactor().redact_text(line + "\n")[0] == line + "\n"
    assert scan_line(line) == []


@pytest.mark.parametrize("value", ["2026-12-03T10:00:00Z", "2026-12-03 10:00:00", "2026-12-03T10:00:00.123+01:00"])
def test_a_date_and_time_does_not_look_generated(value):
    assert not looks_random(value)


def _bitlocker_key() -> str:
    # Real keys have blocks divisible by 11; the detector does not rely on it, so any digits must go.
    return "-".join(f"{secrets.randbelow(10**6):06d}" for _ in range(8))


def _teams_webhook() -> str:
    hexes = [secrets.token_hex(16) for _ in range(4)]
    return (f"https://{secrets.choice(['contoso', 'fabrikam', 'corp-it'])}.webhook.office.com/webhookb2/"
            f"{hexes[0]}@{hexes[1]}/IncomingWebhook/{hexes[2]}/{hexes[3]}")


@pytest.mark.parametrize("template", [
    "BitLocker recovery key: {v}",
    "        {v}",
    "Password: {v}",
    '{{"KeyProtectorType": "RecoveryPassword", "RecoveryPassword": "{v}"}}',
    "Recovery key = '{v}'",
])
def test_a_bitlocker_recovery_key_goes_wherever_it_stands(template):
    for _ in range(4):
        key = _bitlocker_key()
        out = Redactor().redact_text(template.format(v=key) + "\n")[0]
        assert key not in out and key[7:20] not in out, out


@pytest.mark.parametrize("template", ["TEAMS_WEBHOOK={v}", 'Invoke-RestMethod -Uri "{v}" -Method Post', "posting to {v} failed: 429"])
def test_a_teams_webhook_url_loses_its_path(template):
    for _ in range(4):
        url = _teams_webhook()
        out = Redactor().redact_text(template.format(v=url) + "\n")[0]
        assert url.split("/webhookb2/")[1][:20] not in out and "webhook.office.com/webhookb2/" in out, out


@pytest.mark.parametrize("label", ["Recovery key", "RecoveryKey", "recovery_key", "Personal recovery key", "Product key"])
def test_a_labelled_recovery_or_product_key_goes(label):
    for _ in range(4):
        value = "-".join(secrets.token_hex(2).upper() for _ in range(6))
        out = Redactor().redact_text(f"{label}: {value}\n")[0]
        assert value not in out, out


ENV_LISTS = (
    # Kubernetes, Compose, ECS task definitions, GitHub Actions: the name on one line, the value on the next
    "spec:\n  containers:\n    - env:\n        - name: {name}\n          value: {v}\n        - name: LOG_LEVEL\n          value: debug\n",
    "env:\n- name: {name}\n  value: \"{v}\"\n- name: HOME\n  value: /root\n",
    "environment:\n  - Name: {name}\n    Value: '{v}'\n",
    "  - name: {name}\n    # from the vault\n    value: {v}\n",
    # the same in JSON: one object a line, or one key a line (ECS task definitions, `aws ssm`, CloudFormation)
    '"environment": [{{"name": "{name}", "value": "{v}"}}, {{"name": "LOG_LEVEL", "value": "debug"}}]\n',
    '      {{\n        "name": "{name}",\n        "value": "{v}"\n      }},\n      {{\n        "name": "HOME",\n        "value": "/root"\n      }}\n',
    '[{{"ParameterKey": "{name}", "ParameterValue": "{v}"}}]\n',
)


@pytest.mark.parametrize("layout", ENV_LISTS)
@pytest.mark.parametrize("name", ["DB_PASSWORD", "API_TOKEN", "client_secret", "PGPASS", "smtpPassword"])
def test_a_value_below_the_name_of_a_secret_in_an_env_list_goes(layout, name):
    value = _password().replace("#", "x")  # "#" would start a YAML comment after a space
    out = Redactor().redact_text(layout.format(name=name, v=value))[0]
    assert value not in out, out
    for neighbour in ("debug", "/root"):  # the next item's value is its own
        assert (neighbour in out) == (neighbour in layout), out


@pytest.mark.parametrize("text", [
    "env:\n- name: API_TOKEN\n  valueFrom:\n    secretKeyRef:\n      name: x\n      key: token\n- name: HOME\n  value: /root\n",
    "  - name: DB_USER\n    value: app\n",
    "- name: db_password\n  value: \"${DB_PASSWORD}\"\n",
    "steps:\n  - name: Set password\n    run: echo hi\n    value: 3\n",
    '{"name": "LOG_LEVEL", "value": "debug"}\n',
    '      {\n        "name": "HOME",\n        "value": "/root"\n      },\n',
])
def test_env_list_items_that_hold_no_secret_stay(text):
    assert Redactor().redact_text(text)[0] == text


@pytest.mark.parametrize("template", [
    "GET /sso?next=%2Fapp%3Fuser%3Dbob%26password%3D{v}%26lang%3Den HTTP/1.1",
    "redirect_uri=https%3A%2F%2Fapp%2Fcb%3Ftoken%3D{v}",
    "body: user%3Dbob%26pass%3A{v}",
])
def test_a_setting_inside_a_url_encoded_value_loses_its_value(template):
    for _ in range(4):
        value = _password().replace("!", "x").replace("#", "x").replace("%", "x").replace("+", "x")
        out = Redactor().redact_text(template.format(v=value) + "\n")[0]
        assert value not in out, out
