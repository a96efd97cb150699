"""Passwords handed to a command other than by a flag the detectors knew: on its standard input (a
here-string, ``yes X |``, a file made on the fly by ``<(echo X)``), and Windows' and PowerShell's ways
(``/password=X``, ``net user NAME X``, ``net use SHARE /user:NAME X``, ``ConvertTo-SecureString "X" -AsPlainText``, a NetworkCredential,
WMI's ``SetPassword``), ``wpa_cli set_network N psk`` and macOS' ``networksetup -setairportnetwork``.

Such lines reach a share through running processes' command lines, sudo's log of the commands it ran
and PowerShell's script-block log. Each spelling gets fresh random values; the first pass must replace
the value, and the second look (the final check, with its own patterns) must see it when the first pass
has not run. The look-alike commands that carry no secret stay as they are.
"""

from __future__ import annotations

import secrets
import string

import pytest

from agent.redaction import Redactor
from agent.redaction.second_look import scan_line

LINE_PREFIXES = (
    "",
    "Dec  3 09:14:02 pc42 sudo:      bob : TTY=pts/1 ; PWD=/home/bob ; USER=root ; COMMAND=/bin/sh -c ",
    "root      4242  0.0  0.1  12345  6789 pts/1    S+   09:14   0:00 ",
    "2026-12-03 09:14:02 Microsoft-Windows-PowerShell/Operational 4104 Creating Scriptblock text (1 of 1): ",
)

FORMS = (
    "kinit bob@CORP.EXAMPLE <<< {v}",
    "kinit bob <<< '{v}'",
    'sudo -S apt-get update <<< "{v}"',
    "sudo -kS systemctl restart cups <<<{v}",
    'sudo -S <<< "{v}" reboot',
    'chpasswd <<< "alice:{v}"',
    "passwd --stdin bob <<< {v}",
    'cryptsetup open /dev/sdb1 vault <<< "{v}"',
    "vncpasswd -f <<< {v} > ~/.vnc/passwd",
    "yes {v} | passwd bob",
    "yes '{v}' | sudo -S true",
    "rsync --password-file=<(echo {v}) backup@nas::share /srv",
    "rsync --password-file <(printf '%s\\n' {v}) -a /home nas::home",
    "winscp.com /password={v} /command exit",
    "WinSCP.exe sftp://bob@host /pass={v}",
    "net user helpdesk {v} /add",
    'NET.EXE user "Front Desk" {v} /add /domain',
    "net use Z: \\\\fileserver\\scans /user:CORP\\bob {v} /persistent:yes",
    'NET USE \\\\10.0.0.5\\ipc$ /U:"CORP\\front desk" "{v}"',
    "net.exe use P: \\\\print01\\hp /user:bob@corp.example {v}",
    'ConvertTo-SecureString "{v}" -AsPlainText -Force',
    "ConvertTo-SecureString -String '{v}' -AsPlainText -Force",
    '$p = ConvertTo-SecureString -AsPlainText -Force -String "{v}"',
    '$c = New-Object System.Net.NetworkCredential("bob", "{v}")',
    "[System.Net.NetworkCredential]::new('bob', '{v}')",
    "pdftk in.pdf output out.pdf user_pw {v}",
    "pdftk in.pdf output out.pdf owner_pw '{v}' allow printing",
    "appcmd set apppool /apppool.name:Pool /processModel.password:{v}",
    'wmic useraccount where name="bob" call SetPassword "{v}"',
    '$user.SetPassword("{v}")',
    '$entry.ChangePassword("Old-Pass1", "{v}")',
    "wpa_cli set_network 0 psk '\"{v}\"'",
    'wpa_cli -i wlan0 set_network 1 psk "{v}"',
    'networksetup -setairportnetwork en0 "Home WiFi" {v}',
    'basic = HTTPBasicAuth("bob", "{v}")',
    "requests.get(url, auth=HTTPDigestAuth('bob', '{v}'))",
    'aiohttp.BasicAuth("bob", "{v}")',
    'new UsernamePasswordCredentials("bob", "{v}")',
    "ftp.login('bob', '{v}')",
    'smtp.login("alerts@example.com", "{v}")',
    "imap.login(user, '{v}')",
    'client.authenticate("svc-backup", "{v}")',
    "session.sign_in('bob', '{v}', remember=True)",
)

LOOK_ALIKES = (
    "sudo apt-get install cups <<< y",
    "cat <<< \"hello world\" | wc -c",
    "yes | apt-get install foo",
    "yes y | apt-get upgrade",
    "yes '' | passwd bob",
    "net user",
    "net user bob",
    "net user bob /delete",
    "net user bob * /add",
    'net user "John Smith" /active:no',
    "net use Z: \\\\fileserver\\scans /user:CORP\\bob * /persistent:no",
    "net use Z: \\\\fileserver\\scans /user:bob /savecred",
    "net use Z: /delete",
    "ConvertTo-SecureString $plain -AsPlainText -Force",
    "New-Object System.Net.NetworkCredential($user, $pass)",
    "diff <(sort a.txt) <(sort b.txt)",
    "pdftk in.pdf output out.pdf user_pw PROMPT",
    "kinit -k -t /etc/krb5.keytab",
    "the answer was yes, version 4.2.1-3ubuntu2",
    "appcmd list apppool /processModel.userName:bob",
    "wpa_cli set_network 0 ssid '\"Home\"'",
    "networksetup -setairportnetwork en0 Home",
    "call SetPassword $pw",
    "HTTPBasicAuth(user, password)",
    "HTTPBasicAuth(self.user, self.password)",
    "new NetworkCredential($user, $pass)",
    "ftp.login(user, password)",
    "smtp.login(self.user, self.password)",
    "login('bob', pw)",
    "user bob created",
    "user alice deleted from group staff",
    "user = pwd.getpwuid(os.getuid())[0]",
)


def _password(rng: secrets.SystemRandom, length: int) -> str:
    """A fresh value with the character classes a password generator gives (no quotes, no spaces)."""
    chars = [rng.choice(string.ascii_lowercase), rng.choice(string.ascii_uppercase), rng.choice(string.digits),
             rng.choice("!#%+^~")]
    chars += [rng.choice(string.ascii_letters + string.digits + "_-") for _ in range(length - len(chars))]
    rng.shuffle(chars)
    return "".join(chars).lstrip("-") or "x9Q!"


def _cases():
    rng = secrets.SystemRandom()
    for form in FORMS:
        for prefix in LINE_PREFIXES:
            yield form, prefix, _password(rng, rng.randint(8, 24))


@pytest.mark.parametrize("form", FORMS)
def test_the_first_pass_replaces_a_secret_fed_to_a_command(form):
    redactor = Redactor()
    for _, prefix, value in (case for case in _cases() if case[0] == form):
        line = prefix + form.format(v=value)
        out = redactor.redact_text(line + "\n")[0]
        assert value not in out, out
        assert "[REDACTED:password]" in out, out


@pytest.mark.parametrize("form", FORMS)
def test_the_second_look_alone_sees_a_secret_fed_to_a_command(form):
    for _, prefix, value in (case for case in _cases() if case[0] == form):
        line = prefix + form.format(v=value)
        assert scan_line(line), line


@pytest.mark.parametrize("line", LOOK_ALIKES)
def test_commands_that_are_fed_no_secret_stay_as_they_are(line):
    for prefix in LINE_PREFIXES:
        text = prefix + line + "\n"
        assert Redactor().redact_text(text)[0] == text
        assert scan_line(prefix + line) == []



FTP_SCRIPTS = ("user bob {v}", "USER backup {v}", "ftp> user anonymous {v}", "  user svc.backup@example.com {v}")


@pytest.mark.parametrize("form", FTP_SCRIPTS)
def test_an_ftp_scripts_login_loses_its_password(form):
    # `ftp -n host < script` reads "user NAME PASSWORD"; a transcript shows it after "ftp>".
    rng = secrets.SystemRandom()
    for _ in range(5):
        value = _password(rng, rng.randint(8, 24))
        out = Redactor().redact_text(form.format(v=value) + "\n")[0]
        assert value not in out and "[REDACTED:password]" in out, out


SMTP_TRANSCRIPTS = (
    # (server prompt line, client answer line) as mail programs log them
    ("<<< 334 UGFzc3dvcmQ6", ">>> {b64}"),
    ("S: 334 UGFzc3dvcmQ6", "C: {b64}"),
    ("2026-12-03 09:14:02 postfix/smtp[811]: < smtp.example.com[192.0.2.7]:587: 334 cGFzc3dvcmQ6",
     "2026-12-03 09:14:02 postfix/smtp[811]: > smtp.example.com[192.0.2.7]:587: {b64}"),
    ("334 UGFzc3dvcmQ6", "{b64}"),
)


@pytest.mark.parametrize(("prompt", "answer"), SMTP_TRANSCRIPTS)
def test_the_answer_to_an_smtp_password_prompt_goes(prompt, answer):
    # AUTH LOGIN: the server asks for the password in base64 ("Password:"), the client's next line answers.
    import base64

    rng = secrets.SystemRandom()
    for blank in ("", "\n"):
        value = _password(rng, rng.randint(8, 24))
        b64 = base64.b64encode(value.encode()).decode()
        user = base64.b64encode(b"bob@example.com").decode()
        text = "\n".join([">>> AUTH LOGIN", "<<< 334 VXNlcm5hbWU6", f">>> {user}", prompt + blank,
                          answer.format(b64=b64), "<<< 235 2.7.0 Authentication successful"]) + "\n"
        out = Redactor().redact_text(text)[0]
        assert b64 not in out and "[REDACTED:password]" in out, out
        assert "235 2.7.0 Authentication successful" in out and "334 VXNlcm5hbWU6" in out
        assert Redactor().redact_text(out)[0] == out, "a second pass changes nothing"


def test_a_server_reply_after_the_password_prompt_is_not_an_answer():
    text = "S: 334 UGFzc3dvcmQ6\nS: 535 5.7.8 Error: authentication failed\nS: 221 Bye\n"
    assert Redactor().redact_text(text)[0] == text


def test_a_log_line_that_names_a_user_does_not_wake_the_password_flags():
    # The ftp script's form is found by where its line starts: "user" is on a great many log lines, and a
    # detector woken on each would double the time an authentication log takes.
    from agent.redaction.credentials import PasswordFlags

    pipeline = Redactor()._pipeline
    pipeline._refresh()
    flags = next(i for i, d in enumerate(pipeline.detectors) if isinstance(d, PasswordFlags))
    line = "Dec  3 09:12:02 pc42 sshd[1234]: pam_unix(sshd:session): session opened for user bob(uid=1000) by (uid=0)"
    assert flags not in pipeline._active(line)
    text = "".join(f"{line}\n" for _ in range(50)) + "user bob Xk3f9Qzw1\n"
    assert flags in pipeline._active("user bob Xk3f9Qzw1")
    assert pipeline.line_starts(text) is None or len(text) - len("user bob Xk3f9Qzw1\n") in pipeline.line_starts(text)
