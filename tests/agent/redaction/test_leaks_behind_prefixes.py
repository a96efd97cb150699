"""The leak classes of issue 9 still open after the generated corpus of new spellings: secrets that are whole
only behind a log line's prefix, JSON keys written with escapes, and the word forms the final check's second
look did not know.

* ``.pgpass`` lines (host:port:db:user:password, the port a number or ``*``) after a timestamp, a syslog
  header, a level or a few words, with escaped colons, ``[::1]`` hosts and wildcards;
* pass-phrase settings (several words) after the headers of several tools' logs;
* JSON keys whose name decodes to a secret's (``"pass\\u0077ord"``, ``"contrase\\u00f1a"``);
* the second look alone, on raw text, catching every word form the first pass knows.

Values are random from fixed seeds; a value, or any 8-character piece of it, must not survive. Lines of
the same tricky shapes that hold no secret (times, IPv6 and MAC addresses, search paths, syslog headers)
must come out unchanged.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Iterator

import pytest

from agent.redaction import Redactor, second_look, words
from agent.redaction.verify import LeakScanner, scan_text
from tests.agent.redaction.test_new_spellings import SEEDS, Case, _leaking, _rand, leaks, password, phrase, share_bundle_files
from tests.agent.redaction.test_new_spellings import cases as generated_cases


# What stands before the secret on a log line, in several tools' formats.
LOG_PREFIXES = [
    "2026-12-01T10:00:00 app[123]: ",
    "2026-12-01T10:00:00.123456+01:00 pc-42 setup[77]: ",
    "Dec  1 10:00:00 host wpa_supplicant[12]: ",
    "Dec 01 10:00:00 pc-42 NetworkManager[9]: <info>  [1733043600.1234] ",
    "2026-12-01 10:00:00,123 INFO ",
    "2026-12-01 10:00:00 [info] ",
    "[2026-12-01 10:00:00] local.DEBUG: ",
    "10:00:00.123 [main] DEBUG c.e.Setup - ",
    "I1201 10:00:00.123456    1234 setup.go:42] ",
    "DEBUG ",
    "INFO ",
    "[info] ",
    "<7>",
    "12/01/2026 10:00:00 AM  ",
    "2026-12-01T09:00:00Z WARN  ",
    "Dec  1 10:00:00 pc kernel: ",
]


def pgpass_behind_prefixes(rng: random.Random) -> Iterator[Case]:
    hosts = ["db.example.com", "*", "10.0.0.7", "localhost", "[::1]", "[fd00::7]", r"\:\:1", "pg_01", "db-2.corp"]
    leads = ["", "pgpass line: ", "wrote ~/.pgpass -> ", "added ", "line 3: ", "entry ", "PGPASSFILE: ", "-> ",
             "read '", 'got "', "cat ~/.pgpass: "]
    trails = ["", " ", "\r", " (mode 0600)", ".", ",", " ok", "'", '"']
    for _ in range(60):
        v = password(rng, symbols="!#%&*+-?@^_~.$/")
        escaped = v
        if rng.random() < 0.5:
            cut = rng.randint(1, len(v) - 1)
            escaped = v[:cut] + rng.choice([r"\:", "\\\\"]) + v[cut:]
        line = ":".join([rng.choice(hosts), rng.choice(["5432", "*", "6432", "15432"]),
                         rng.choice(["app", "*", "warehouse", "my-db", "db.name"]),
                         rng.choice(["app", "postgres", "*", "etl_user", "svc.reporting", r"dom\\user"]), escaped])
        lead = rng.choice(leads)
        trail = rng.choice(trails)
        if lead.endswith(("'", '"')):
            trail = lead[-1] + rng.choice(["", " >> ~/.pgpass"])
            lead = "echo " + lead if rng.random() < 0.5 else lead
        elif trail.strip() in ("'", '"'):
            trail = ""
        pieces = tuple(p for p in escaped.replace("\\:", "\x00").replace("\\\\", "\x00").split("\x00") if len(p) >= 8)
        yield Case("pgpass-prefixed", rng.choice(LOG_PREFIXES) + lead + line + trail, pieces or (v,))


PHRASE_SETTINGS = [
    'psk="{v}"', "psk={v}", "psk: {v}", "wifi-sec.psk: {v}", "802-11-wireless-security.psk: {v}",
    "set passphrase = {v}", "passphrase = {v}", "passphrase: {v}", "WPA key: {v}", "wpa_passphrase={v}",
    "Passphrase: '{v}'", "pass phrase = {v}", "Password: {v}", "password = {v}", "Wi-Fi password: {v}",
    "network key = {v}", "Security key: {v}", "WLAN-Schlüssel: {v}", "Kennwort = {v}", "pre-shared key: {v}",
    "secret phrase: {v}", "mot de passe : {v}", "PSK = {v}", "new psk: {v}", "wpa-psk {v}", "sae_password={v}",
]


def pass_phrases_behind_prefixes(rng: random.Random) -> Iterator[Case]:
    for setting in PHRASE_SETTINGS:
        for _ in range(3):
            v = phrase(rng, rng.randint(2, 5))
            prefix = rng.choice(LOG_PREFIXES)
            if setting.startswith("wpa-psk") and not prefix.rstrip().endswith((":", "]")):
                prefix = "Dec  1 10:00:00 host ifup[12]: "
            yield Case("pass-phrase-prefixed", prefix + setting.format(v=v) + rng.choice(["", " ", "\r"]), (v,))


ESCAPED_KEYS = [
    "pass\\u0077ord", "Pass\\u0077ord", "p\\u0061ssword", "\\u0070assword", "api\\u005fkey", "API\\u005fKEY",
    "client\\u005fsecret", "access\\u005ftoken", "contrase\\u00f1a", "Contrase\\u00f1a", "Kennw\\u00f6rter",
    "Passw\\u00f6rter", "has\\u0142o", "l\\u00f6senord", "jelsz\\u00f3", "\\u043f\\u0430\\u0440\\u043e\\u043b\\u044c",
    "\\u041f\\u0430\\u0440\\u043e\\u043b\\u044c", "\\u5bc6\\u7801", "\\u30d1\\u30b9\\u30ef\\u30fc\\u30c9",
    "db\\u005fpassword", "secret\\u002dkey", "mot\\u0020de\\u0020passe", "\\u0074oken",
]


def json_escaped_keys(rng: random.Random) -> Iterator[Case]:
    for key in ESCAPED_KEYS:
        for _ in range(3):
            v = password(rng, symbols="!#%&*+-?@^_~.$/:")
            value = json.dumps(v)
            form = rng.choice([
                '{{"{k}": {v}}}', '{{"user": "alex", "{k}": {v}, "level": "info"}}', '  "{k}": {v},',
                '{{"{k}":{v}}}', '"{k}" : {v}', "[{{\"{k}\": {v}}}]", '{{"config": {{"{k}": {v}}}}}',
                "2026-12-01 10:00:00 INFO payload={{\"{k}\": {v}}}",
            ])
            yield Case("json-escaped-key", form.format(k=key, v=value), (v,))
        digits = _rand(rng, string.digits, 9)
        yield Case("json-escaped-key", f'{{"{key}": {digits}}}', (digits,))


GENERATORS: dict[str, Callable[[random.Random], Iterator[Case]]] = {
    "pgpass-prefixed": pgpass_behind_prefixes,
    "pass-phrase-prefixed": pass_phrases_behind_prefixes,
    "json-escaped-key": json_escaped_keys,
}


def cases(name: str, seed: int) -> list[Case]:
    return generated_cases(name, seed, GENERATORS)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_no_generated_secret_survives_redaction(name, seed):
    redactor = Redactor()
    generated = cases(name, seed)
    assert len(generated) >= 40
    found = _leaking(generated, lambda text: redactor.redact_text(text)[0])
    assert not found, f"{len(found)} of {len(generated)} leak:\n" + "\n".join(found[:40])


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_redacting_the_output_again_changes_nothing(name):
    redactor = Redactor()
    for case in cases(name, SEEDS[0]):
        once = redactor.redact_text(case.text + "\n")[0]
        assert redactor.redact_text(once)[0] == once, case.text


def test_a_json_document_with_escaped_keys_stays_valid_json():
    redactor = Redactor()
    for case in cases("json-escaped-key", SEEDS[1]):
        if case.text.startswith(("{", "[")):
            out = redactor.redact_text(case.text + "\n")[0]
            json.loads(out)


CLEAN_LINES = [
    "2026-12-01T10:00:00 app[123]: started in 10:00:00:123",
    "Dec  1 10:00:00 host sshd[812]: Accepted publickey for alex from fe80::1:2:3:4 port 22",
    "Dec  1 10:00:00 host kernel: eth0: link up, address 00:11:22:33:44:55",
    "2026-12-01 10:00:00 INFO mac=00:1a:2b:3c:4d:5e ip=fd00:1234:5678:9abc:def0:1:2:3",
    "INFO LD_LIBRARY_PATH=/usr/lib:/lib:/usr/local/lib:/opt:/srv",
    "DEBUG search path /usr/lib:/lib:/usr/local/lib:/opt:/srv",
    "[info] days Tue:Wed:Thu:Fri:Sat",
    "2026-12-01 10:00:00 DEBUG key: value, host: db, port: 5432",
    "10:00:00 app: db.internal:5432 connected as app",
    "[info] a:b:c:d:e",
    "INFO timings 10:00:00:01:02",
    "Dec  1 10:00:00 host app[1]: listening on 127.0.0.1:8080:GET:/health:200",
    "2026-12-01 10:00:00 INFO upstream 10.0.0.7:5432:*:app:* ready",
    "Dec  1 10:00:00 host wpa_supplicant[12]: wlan0: WPA: Key negotiation completed with 00:11:22:33:44:55",
    "Dec  1 10:00:00 host NetworkManager[9]: <info> wifi-sec.psk: not set",
    "2026-12-01 10:00:00 INFO password: changed for user alex",
    "2026-12-01 10:00:00 INFO passphrase: is too short for the network",
    "DEBUG psk: missing from the profile",
    "[wifi] WPA key: not present",
    "2026-12-01 10:00:00 INFO token: expired at 10:00",
    "INFO set passphrase = ********",
    '{"password_policy": "min 12 characters", "level": "info"}',
    '{"msg": "caf\\u00e9 ouvert", "user": "alex"}',
    '{"n\\u00famero": 12, "pass\\u0077ord_hint": "the dog"}',
    # A line that starts with an address: a network profile's settings, a list of addresses, a neighbour table.
    "mac-address=52:54:00:12:34:56",
    "cloned-mac-address=00:1A:2B:3C:4D:5E",
    "hwaddr=00:11:22:33:44:55",
    "00:11:22:33:44:55",
    "  AA:BB:CC:0D:0E:0F",
    "fe80:0:0:0:0:0:0:1%eth0",
    "address1=fd00:0:0:12:0:0:0:1/64",
    "IPV6ADDR=2001:0db8:0:0:0:0:0:1",
    # How a network authenticates, in nmcli's, macOS's and service settings' words: a method, not a secret.
    "802-11-wireless-security.key-mgmt:      wpa-psk",
    "802-11-wireless-security.psk-flags:      0 (none)",
    "    link auth: wpa2-psk",
    "auth = scram-sha-256",
    "wifi-security key-mgmt=SAE auth-alg=open",
    # "PSW" is also a CPU's program status word, in a kernel's oops.
    "Dec  1 10:00:00 host kernel: Krnl PSW : 0704c00180000000 000003ff8f2c8b9a (do_exit+0x12/0x40)",
    "2026-12-01 10:00:00 INFO the pword field is empty",
    # A setting that names the file its credentials are in (fstab's cifs line, a cloud SDK's variable).
    "//nas/scans /mnt/scans cifs credentials=/root/.smbcredentials,uid=1000,iocharset=utf8 0 0",
    "GOOGLE_APPLICATION_CREDENTIALS=/home/alex/.config/gcloud/key.json",
    "credentials: ~/.aws/credentials",
    "client_secret = C:\\ProgramData\\App\\client.secret",
]


@pytest.mark.parametrize("line", CLEAN_LINES)
def test_ordinary_log_lines_of_the_same_shapes_stay(line):
    assert Redactor().redact_text(line + "\n") == (line + "\n", {})


@pytest.mark.parametrize("line", CLEAN_LINES)
def test_the_second_look_stays_quiet_on_them(line):
    assert second_look.scan_line(line) == []


# --- the final check's second look, on its own -------------------------------------------------------------


def _strong(rng: random.Random) -> str:
    """A generated password with a symbol in it: random-looking to either pass whatever its letters spell."""
    v = password(rng, symbols="!#%&*+?@^_~", size=(12, 20))
    return v[:6] + rng.choice("!#%+^~") + v[6:]


def _word_forms() -> list[str]:
    """Every password word the first pass knows, as written in text and as a JSON encoder escapes it."""
    return [*words.password_words(), *words.ESCAPED_PASSWORD_WORDS, *words.ABBREVIATED_PASSWORD_WORDS]


SECOND_LOOK_FORMS = [
    "pass {v}", "pw: {v}", "PW {v}", "the pass is {v}", "pass = {v}", "pw -> {v}", "password -> {v}",
    "Passwort -> {v}", "router admin password: {v}", "Security key: {v}", "security key = {v}",
    "WLAN-Schlüssel: {v}", "WLAN-Schluessel: {v}", "Netzwerkschlüssel: {v}", "network key: {v}",
    "wifi key: {v}", "WPA key: {v}", "license key: {v}", "master key = {v}", "encryption key: {v}",
    '{{"contrase\\u00f1a": "{v}"}}', '{{"pass\\u0077ord": "{v}"}}', '{{"api\\u005fkey": "{v}"}}',
    '{{"Kennw\\u00f6rter": "{v}"}}', "PIN: {p}", "SIM PIN is {p}", "PIN-Code: {p}", "pin code = {p}",
    "Dec  1 10:00:00 host app[1]: db.example.com:5432:*:app:{v}", "[info] wrote ~/.pgpass -> *:*:*:postgres:{v}",
    "DEBUG pgpass line: [::1]:5432:db:user:{v}", "DEBUG pgpass line: \\:\\:1:*:db:user:{v}",
]


@pytest.mark.parametrize("form", SECOND_LOOK_FORMS)
def test_the_second_look_alone_flags_each_form(form):
    rng = random.Random(form)
    for prefix in ("", "2026-12-01 10:00:00 INFO ", "Dec  1 10:00:00 host app[1]: "):
        line = prefix + form.format(v=_strong(rng), p=_rand(rng, string.digits, rng.randint(4, 8)))
        assert second_look.scan_line(line), line
        assert second_look.scan_text(line + "\n"), line


@pytest.mark.parametrize("word", _word_forms())
def test_the_second_look_knows_every_password_word_of_the_first_pass(word):
    rng = random.Random(word)
    for template in ("{w}: {v}", "{w} = {v}", '"{w}": "{v}"', "{w} -> {v}"):
        line = "2026-12-01 10:00:00 INFO " + template.format(w=word, v=_strong(rng))
        assert second_look.scan_line(line), line


class _MissingEverything:
    """A first pass that finds nothing: the final check must rely on its second look."""

    names: tuple[str, ...] = ()

    def triggers(self):
        from agent.redaction.triggers import Triggers

        return Triggers()

    def apply(self, line, hit):
        return line


@pytest.mark.parametrize("fields", ["10.0.0.1:5432:12:34", "db:*:0:7", "[fe80::1]:5432:1:2", "h0:5432:ab:cd"])
def test_a_pgpass_line_of_short_hex_fields_before_its_password_is_still_redacted(fields):
    """An address's groups end a line's colon fields; a random password after digit or hex fields does not look like one."""
    value = password(random.Random(fields), size=(12, 18))
    line = f"{fields}:{value}\n"
    out, counts = Redactor().redact_text(line)
    assert value not in out and counts


@pytest.mark.parametrize("row", [
    '<tr><td>mac</td><td>ce:79:00:59:55:94</td><td><span class="null">none</span></td></tr>',
    "<tr><td>2024-03-12T08:59:40+01:00</td><td>2024-03-13T08:04:30+01:00</td></tr>",
    "<tr><td>2024-03-14T10:20:33+00:00</td><td>sdb</td><td>blk_update_request: I/O error, dev sdb</td></tr>",
    "<li>eth0:1:up:1500:ce:79:00:59:55:94</li>",
])
def test_a_page_s_row_of_colons_is_not_a_pgpass_line(row):
    """A host name holds no markup: a table row whose cells hold a MAC address or two times of day is left
    alone (the report page puts a row on each line; the final check replaced the whole page for these)."""
    assert Redactor().redact_text(row) == (row, {})


@pytest.mark.parametrize("wrapped", ["<pre>{line}</pre>", "<td>{line}</td>", "<li>{line}"])
def test_a_pgpass_line_inside_markup_is_still_redacted(wrapped):
    value = password(random.Random(wrapped), size=(12, 18))
    out, counts = Redactor().redact_text(wrapped.format(line=f"db.example.com:5432:app:bob:{value}"))
    assert value not in out and counts


def test_the_final_check_withholds_what_a_first_pass_missed():
    from agent.redaction.detectors import Pipeline
    from agent.redaction.pseudonyms import PseudonymMap

    rng = random.Random("final-check")
    lines = [form.format(v=_strong(rng), p=_rand(rng, string.digits, 6)) for form in SECOND_LOOK_FORMS]
    pseudonyms = PseudonymMap()
    found = scan_text("\n".join(lines), Pipeline([_MissingEverything()], pseudonyms), LeakScanner(pseudonyms))
    flagged = {line for line, _ in found}
    assert flagged == set(range(1, len(lines) + 1)), [lines[n - 1] for n in range(1, len(lines) + 1)
                                                      if n not in flagged]


# --- through the real share ----------------------------------------------------------------------------


def test_a_sample_through_the_real_share_leaves_nothing_in_the_bundle(tmp_path):
    rng = random.Random("share-behind-prefixes")
    picked = [case for name in sorted(GENERATORS) for case in rng.sample(cases(name, SEEDS[2]), 20)]
    logs = tmp_path / "logs"
    logs.mkdir()
    text = "".join(case.text + "\n" for case in picked)
    (logs / "app.log").write_text(text, encoding="utf-8")
    (logs / "legacy.log").write_bytes(b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le"))
    texts = {name: data.decode("utf-16") if data[:2] == b"\xff\xfe" else data.decode("utf-8")
             for name, data in share_bundle_files(tmp_path, logs, "wifi broken").items()}
    assert any(name.endswith("app.log") for name in texts) and any(name.endswith("legacy.log") for name in texts)
    found = [f"{name}: {value!r} from {case.text[:100]!r}"
             for case in picked for name, body in texts.items() for value in leaks(case, body)]
    assert not found, "\n".join(found[:40])


@pytest.mark.parametrize("form", ["credentials={v}", "secret=/{v}", "client_secret: /run/secrets/{v}", "password=/srv/{v}"])
def test_a_secret_that_looks_like_a_path_is_still_redacted(form):
    value = _strong(random.Random(form))
    out = Redactor().redact_text(form.format(v=value) + "\n")[0]
    assert value not in out, out


@pytest.mark.parametrize("setting", ["wpa_passphrase = {p}", "wpa_passphrase: {p}", "wpa-psk = {p}", "  wpa-psk: {p}",
                                     "wpa-psk {p}", "wireless-key1 = {p}", "wpa_passphrase={p}"])
def test_a_pass_phrase_setting_loses_every_word_and_keeps_its_separator(setting):
    """hostapd's and ifupdown's pass-phrase settings, written with or without a separator: the phrase is all the words."""
    rng = random.Random(setting)
    phrase_words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 8))) for _ in range(4)]
    line = setting.format(p=" ".join(phrase_words))
    out = Redactor().redact_text(line + "\n")[0]
    assert not any(word in out for word in phrase_words), out
    assert out.startswith(line.split(phrase_words[0])[0]), out  # "wpa-psk = " stays "wpa-psk = "


@pytest.mark.parametrize("form", ["my {w} is {v}", "{W}: {v}", "{w} {v}", "db_{w} = {v}", '{{"{w}": "{v}"}}', "Wifi {w}: {v}"])
@pytest.mark.parametrize("word", words.ABBREVIATED_PASSWORD_WORDS)
def test_a_password_word_written_short_is_redacted(word, form):
    """People abbreviate the word in notes and tickets: "pswd: X", "my pwrd is X"."""
    value = _strong(random.Random(word + form))
    line = form.format(w=word, W=word.upper(), v=value) + "\n"
    assert value not in Redactor().redact_text(line)[0], line
    assert second_look.scan_text(line), line


@pytest.mark.parametrize("word", [*words.password_words(), *words.ABBREVIATED_PASSWORD_WORDS])
def test_every_password_word_wakes_the_first_pass_and_is_redacted(word):
    # A word no trigger literal is in never reaches the detectors: "Kennwörter" was such a word.
    assert any(literal in word.lower() for literal in (*words.PASSWORD_TRIGGERS, *words.SHORT_TRIGGERS)), word
    rng = random.Random(word)
    for template in ("{w}: {v}", "{w} = {v}", '{{"{w}": "{v}"}}'):
        value = _strong(rng)
        out = Redactor().redact_text(template.format(w=word, v=value) + "\n")[0]
        assert value not in out, out


@pytest.mark.parametrize("length", [30, 36, 48])
def test_an_npm_token_of_any_length_is_redacted_and_seen_by_the_second_look(length):
    rng = random.Random(length)
    value = "npm_" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(length))
    line = f"//registry.npmjs.org/:_authToken={value}\nnpm whoami --token {value}\n"
    out = Redactor().redact_text(line)[0]
    assert value[4:] not in out, out
    assert second_look.scan_line(f"token {value}") and second_look.scan_line(value)
