"""Pseudonyms are consistent within one Redactor, distinct per original, and never re-pseudonymised."""

from __future__ import annotations

import re

from agent.redaction import PseudonymMap, RedactionOptions, Redactor

ALL_ON = RedactionOptions(
    network=True,
    hostnames=True,
    usernames=True,
    known_hostnames=("pc42.corp.example-internal.com",),
    known_usernames=("alice",),
)


def test_same_value_same_pseudonym_across_files_and_calls(tmp_path):
    redactor = Redactor(ALL_ON)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.log").write_text("from 192.0.2.10 mail bob@fabrikam.io mac 3c:58:c2:1a:7e:44\n")
    (tmp_path / "src" / "b.log").write_text("to 192.0.2.10 cc BOB@Fabrikam.io mac 3C-58-C2-1A-7E-44 via 2001:db8::1\n")
    redactor.redact_tree(tmp_path / "src", tmp_path / "out")
    a = (tmp_path / "out" / "a.log").read_text()
    b = (tmp_path / "out" / "b.log").read_text()
    text, _ = redactor.redact_text("again 192.0.2.10 and 2001:0db8:0000::0001\n")
    assert a == "from ip-1 mail email-1@redacted.invalid mac mac-1\n"
    assert b == "to ip-1 cc email-1@redacted.invalid mac mac-1 via ip6-1\n"
    assert text == "again ip-1 and ip6-1\n"  # the same IPv6 address in another spelling


def test_different_values_get_different_pseudonyms():
    redactor = Redactor(ALL_ON)
    text, counts = redactor.redact_text("192.0.2.1 192.0.2.2 192.0.2.3 a@x.io b@x.io fileserver.example-corp.com\n")
    assert text == "ip-1 ip-2 ip-3 email-1@redacted.invalid email-2@redacted.invalid host-2\n"
    assert counts == {"ipv4": 3, "email": 2, "hostname": 1}


def test_known_names_are_numbered_first():
    redactor = Redactor(ALL_ON)
    text, _ = redactor.redact_text("/home/zed/x then alice on PC42 (pc42.corp.example-internal.com)\n")
    assert text == "/home/user-2/x then user-1 on host-1 (host-1)\n"


def test_a_user_learned_from_a_path_is_replaced_everywhere_after():
    text, _ = Redactor(RedactionOptions(usernames=True)).redact_text(
        "ls /home/mkowalski\nmkowalski logged in; mkowalski2 is someone else\n"
    )
    assert text == "ls /home/user-1\nuser-1 logged in; mkowalski2 is someone else\n"


def test_a_user_learned_late_is_replaced_in_files_written_earlier(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a-journal.txt").write_text("session opened for user mkowalski\n")
    (src / "b-home.txt").write_text("/home/mkowalski/.bashrc\n")
    redactor = Redactor(RedactionOptions(usernames=True))
    redactor.redact_tree(src, tmp_path / "out")
    assert (tmp_path / "out" / "a-journal.txt").read_text() == "session opened for user user-1\n"
    assert redactor.verify_tree(tmp_path / "out") == []


def test_pseudonyms_are_never_pseudonymised_again():
    redactor = Redactor(ALL_ON)
    once, _ = redactor.redact_text(
        "/home/bob 10.1.2.3 C:\\Users\\Eve\\x mail eve@contoso.de host db1.example-corp.com\n"
    )
    twice, counts = Redactor(ALL_ON).redact_text(once)
    assert twice == once
    assert counts == {}


def test_the_map_holds_originals_and_never_a_pseudonym():
    redactor = Redactor(ALL_ON)
    redactor.redact_text("10.9.8.7 and /home/carol and carol@fabrikam.io\n")
    table = redactor.pseudonyms.as_dict()
    assert table["ipv4"] == {"10.9.8.7": "ip-1"}
    assert table["username"] == {"alice": "user-1", "carol": "user-2"}
    assert table["email"] == {"carol@fabrikam.io": "email-1@redacted.invalid"}
    for kind, original, alias in redactor.pseudonyms.items():
        assert not PseudonymMap.is_pseudonym(kind, original)
        assert PseudonymMap.is_pseudonym(kind, alias)


def test_separate_redactors_do_not_share_a_map():
    first, second = Redactor(ALL_ON), Redactor(ALL_ON)
    first.redact_text("192.0.2.50\n")
    text, _ = second.redact_text("192.0.2.99 192.0.2.50\n")
    assert text == "ip-1 ip-2\n"


def test_pseudonyms_match_no_detector():
    redactor = Redactor(ALL_ON)
    aliases = " ".join(
        re.sub(r"\d+", "7", alias)
        for alias in ("ip-1", "ip6-1", "mac-1", "host-1", "user-1", "email-1@redacted.invalid")
    )
    assert redactor.redact_text(aliases + "\n") == (aliases + "\n", {})
