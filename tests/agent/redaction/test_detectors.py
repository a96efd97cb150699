"""Line-level behaviour of the detectors: exact outputs for tricky spellings, and what must stay."""

from __future__ import annotations

import pytest

from agent.redaction import RedactionOptions, Redactor
from agent.redaction.keys import classify_key

NETWORK = RedactionOptions(network=True)


def redact(line: str, options: RedactionOptions = RedactionOptions()) -> str:
    return Redactor(options).redact_text(line)[0]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("password=hunter2", "password=[REDACTED:password]"),
        ("Password: hunter2", "Password: [REDACTED:password]"),
        ("PASSWORD = correct horse battery staple", "PASSWORD = [REDACTED:password]"),
        ('db_password = "two words"', 'db_password = "[REDACTED:password]"'),
        ("  mysql_pwd: 'x y z'  # old", "  mysql_pwd: '[REDACTED:password]'  # old"),
        ('{"Password":"a\\"b","user":"u"}', '{"Password":"[REDACTED:password]","user":"u"}'),
        ('"pin_password": 4711,', '"pin_password": "[REDACTED:password]",'),
        ("export DB_PASSWORD=p4ss", "export DB_PASSWORD=[REDACTED:password]"),
        ("set DB_PASSWORD=p4ss", "set DB_PASSWORD=[REDACTED:password]"),
        ("# password = commented-out", "# password = [REDACTED:password]"),
        ("$db_pass = 'php';", "$db_pass = '[REDACTED:password]';"),
        ("$cfg['password'] = 'php-array';", "$cfg['password'] = '[REDACTED:password]';"),
        ("'password' => 'perl-hash',", "'password' => '[REDACTED:password]',"),
        ("tool --password=abc --verbose", "tool --password=[REDACTED:password] --verbose"),
        ("tool --password abc --verbose", "tool --password [REDACTED:password] --verbose"),
        ("tool --password -v", "tool --password -v"),
        ("tool -p abc", "tool -p abc"),
        ("a user=bob password=s3cr3t host=db1", "a user=bob password=[REDACTED:password] host=db1"),
        ("GET /x?user=a&access_token=abc&x=1", "GET /x?user=a&access_token=[REDACTED:token]&x=1"),
        ("Server=s;User Id=sa;Password=a b c;Encrypt=1", "Server=s;User Id=sa;Password=[REDACTED:password];Encrypt=1"),
        ("{db_password=abc, pool=10}", "{db_password=[REDACTED:password], pool=10}"),
        ('echo "token: two words" > f', 'echo "token: [REDACTED:token]" > f'),
        ('setenv("API_SECRET", "v a l")', 'setenv("API_SECRET", "[REDACTED:secret]")'),
        ("clientSecret: abc", "clientSecret: [REDACTED:secret]"),
        ("x-api-key: abc", "x-api-key: [REDACTED:api-key]"),
        ("Cookie: a=1; b=2", "Cookie: [REDACTED:cookie]"),
        ("JSESSIONID=abc", "JSESSIONID=[REDACTED:session]"),
        ("key_password = '''tri ple'''", "key_password = '''[REDACTED:password]'''"),
        ("tokens: [a, b]", "tokens: [[REDACTED:token]]"),
        ('"tokens": ["a", "b"]', '"tokens": ["[REDACTED:token]", "[REDACTED:token]"]'),
        ("<password>x</password>", "<password>[REDACTED:password]</password>"),
        ('<add key="DbPassword" value="x y" />', '<add key="DbPassword" value="[REDACTED:password]" />'),
        ("postgres://u:p%40ss@db:5432/x", "postgres://u:[REDACTED:url-password]@db:5432/x"),
        ("HTTPS_PROXY=bob:pw@proxy:3128", "HTTPS_PROXY=bob:[REDACTED:url-password]@proxy:3128"),
        ("Authorization: Bearer abc.def-123456", "Authorization: Bearer [REDACTED:bearer-token]"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED:basic-auth]"),
        ("proxy-authorization: NTLM TlRMTVNTUAAB", "proxy-authorization: NTLM [REDACTED:authorization]"),
        ("sent Basic dXNlcjpwYXNz now", "sent Basic [REDACTED:basic-auth] now"),
        ("bearer 0123456789abcdef0123", "bearer [REDACTED:bearer-token]"),
        ("AKIAQ3EGRD5HXW7PLMNB", "[REDACTED:aws-access-key-id]"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key = [REDACTED:aws-secret-key]",
        ),
        ("xoxb-1234567890-abcdefghij", "[REDACTED:slack-token]"),
        ("root:$6$saltsalt$abcdefghijklmnop:19700:0:99999:7:::", "root:[REDACTED:password-hash]:19700:0:99999:7:::"),
        ("mail bob@example.org", "mail email-1@redacted.invalid"),
    ],
)
def test_secret_forms(line, expected):
    assert redact(line + "\n") == expected + "\n"


@pytest.mark.parametrize(
    "line",
    [
        "Password changed for user bob",
        "sshd[1]: Failed password for invalid user admin from 203.0.113.9 port 22 ssh2",
        'FATAL:  password authentication failed for user "app"',
        "passwd: password updated successfully",
        "passwd:         files systemd",
        "See /etc/passwd and /etc/shadow",
        "pam_unix(passwd:chauthtok): password changed for alex",
        "Invalid token: signature mismatch",
        "token: expired",
        "authorization: denied for role viewer",
        "PasswordAuthentication no",
        "password_file=/run/secrets/db",
        "token_type: Bearer",
        "max_tokens: 4096",
        "PWD=/home/alex",
        "XDG_SESSION_ID=2",
        "db_password: ${DB_PASSWORD}",
        "smtp_password: '{{ vault_smtp_password }}'",
        "password: ********",
        "password: null",
        "rc  libsecret-1-0:amd64  0.20.5-3  amd64  Secret store",
        "Started getty@tty1.service - Getty on tty1.",
        "git@github.com:acme/app.git",
        "Bearer authentication is enabled",
        "Basic configuration done",
        "ssh deploy@web01.internal uptime",
        "-----BEGIN CERTIFICATE-----",
        "commit 7a3f9c2e5b1d4f60a8e9c0b1d2e3f4a5b6c7d8e9",
    ],
)
def test_not_secrets(line):
    assert redact(line + "\n") == line + "\n"


@pytest.mark.parametrize(
    "line",
    [
        "ii  libfoo  1.2.3.4  amd64  a library",
        "libfoo/now 1.2.3.4 amd64 [installed,local]",
        "legacy-shim        1.2.3.4",
        "legacy-shim==1.2.3.4",
        "firmware 1.2.3.4",
        "Firmware version: 1.2.3.4",
        "BIOS revision 5.17.1.0",
        "Driver Version  . . . . . : 12.19.2.45",
        "v1.2.3.4",
        "pkg-1.2.3.4.tar.gz",
        "1.2.3.4-1",
        "1.2.3.4~rc1",
        "1.2.3.4+dfsg",
        "Chrome 120.0.6099.109",
        "Windows 10.0.19045.3803",
        "OID 1.3.6.1.4.1.2021",
        "127.0.0.1 localhost",
        "netmask 255.255.255.0 broadcast 255.255.255.255",
        "listen 0.0.0.0:80 and [::]:80 and ::1",
        "mdns 224.0.0.251 ff02::fb",
        "12:34:56 and std::vector and a[::2]",
    ],
)
def test_versions_and_unidentifying_addresses_are_kept_with_network_on(line):
    assert redact(line + "\n", NETWORK) == line + "\n"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("nameserver 8.8.8.8", "nameserver ip-1"),
        ("inet 192.168.1.5/24", "inet ip-1/24"),
        ("from 10.0.0.1:22.", "from ip-1:22."),
        ("inet addr:10.1.2.3  Bcast:10.1.2.255", "inet addr:ip-1  Bcast:ip-2"),
        ("ping 1.2.3.4", "ping ip-1"),
        ("fe80::1c2b:3dff:fe4e:5f60%wlan0", "ip6-1%wlan0"),
        ("[2001:db8::1]:443", "[ip6-1]:443"),
        ("::ffff:192.0.2.1", "ip6-1"),
        ("ether 3c:58:c2:1a:7e:44 brd ff:ff:ff:ff:ff:ff", "ether mac-1 brd ff:ff:ff:ff:ff:ff"),
        ("Physical Address: 3C-58-C2-1A-7E-44", "Physical Address: mac-1"),
        ("aabb.cc00.0100", "mac-1"),
    ],
)
def test_addresses_are_pseudonymised_with_network_on(line, expected):
    assert redact(line + "\n", NETWORK) == expected + "\n"


def test_keep_hosts_are_never_pseudonymised():
    options = RedactionOptions(network=True, hostnames=True, keep_hosts=("helpline.acme-corp.com", "198.51.100.7"))
    line = "upload to helpline.acme-corp.com (198.51.100.7) not files.acme-corp.com (198.51.100.8)\n"
    assert redact(line, options) == "upload to helpline.acme-corp.com (198.51.100.7) not host-1 (ip-1)\n"


def test_hostnames_skip_file_names_and_public_software_sources():
    line = "setup.py README.md os.path deb.debian.org pool.ntp.org nas01.office.lan\n"
    assert (
        redact(line, RedactionOptions(hostnames=True))
        == "setup.py README.md os.path deb.debian.org pool.ntp.org host-1\n"
    )


def test_usernames_in_windows_and_unix_paths():
    line = 'C:\\Users\\Anna Schmidt\\x "C:\\\\Users\\\\bob\\\\y" C:/Users/eve/z /home/carol C:\\Users\\Public\n'
    assert redact(line, RedactionOptions(usernames=True)) == (
        'C:\\Users\\user-3\\x "C:\\\\Users\\\\user-4\\\\y" C:/Users/user-1/z /home/user-2 C:\\Users\\Public\n'
    )


def test_url_user_is_pseudonymised_only_with_usernames_on():
    line = "https://alice:pw1@git.example-corp.com/x\n"
    assert redact(line) == "https://alice:[REDACTED:url-password]@git.example-corp.com/x\n"
    assert (
        redact(line, RedactionOptions(usernames=True))
        == "https://user-1:[REDACTED:url-password]@git.example-corp.com/x\n"
    )


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("DB_PASSWORD", "password"),
        ("keyStorePassword", "password"),
        ("PGPASSWORD", "password"),
        ("mysql_pwd", "password"),
        ("wep_key0", "password"),
        ("private-key-password", "password"),
        ("private_key", "private-key"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-key"),
        ("SecretAccessKey", "aws-secret-key"),
        ("AZURE_CLIENT_SECRET", "azure-client-secret"),
        ("client_secret", "secret"),
        ("credentials", "secret"),
        ("x-api-key", "api-key"),
        ("AccountKey", "api-key"),
        ("refresh_token", "token"),
        ("auth", "token"),
        ("session_id", "session"),
        ("Set-Cookie", "cookie"),
        ("password_file", None),
        ("PasswordAuthentication", None),
        ("token_type", None),
        ("secret_name", None),
        ("max_tokens", None),
        ("tokenizer", None),
        ("public_key", None),
        ("keyboard", None),
        ("bypass", None),
        ("OLDPWD", None),
        ("DESKTOP_SESSION", None),
        # NetworkManager's secret flags (who keeps the secret) and PostgreSQL's hashing scheme for passwords.
        ("psk-flags", None),
        ("password-flags", None),
        ("802-11-wireless-security.psk-flags", None),
        ("leap-password-flags", None),
        ("secret_flags", None),
        ("password_encryption", None),
        ("802-11-wireless-security.key-mgmt", None),
        ("key_management", None),
    ],
)
def test_key_names(key, kind):
    assert classify_key(key) == kind


def test_proxy_url_with_scheme_keeps_the_scheme_when_names_are_pseudonymised():
    """A proxy variable holding a full URL is the URL rule's: the scheme must never be read as a user."""
    from agent.redaction import RedactionOptions, Redactor

    redactor = Redactor(RedactionOptions(usernames=True))
    text, counts = redactor.redact_text("HTTPS_PROXY=http://alice:S3cretPw@proxy.example.com:3128\nsee http://example.org/\n")
    assert text.startswith("HTTPS_PROXY=http://user-") and "S3cretPw" not in text and "alice" not in text
    assert "see http://example.org/" in text
    assert counts.get("url-password") == 1
