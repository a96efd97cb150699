"""redact_file / redact_tree / verify_tree: fail closed, stream, keep JSON valid, report every entry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.redaction import DROPPED, NOT_SCRUBBED, SCRUBBED, RedactionOptions, Redactor, scrubber, textfiles

AWS_KEY_ID = "AKIAQ3EGRD5HXW7PLMNB"
PEM_BODY = [f"MIIEowIBAAKCAQEA{n:04d}" + "q" * 44 for n in range(400)]


def pem_block(indent: str = "") -> str:
    lines = ["-----BEGIN RSA PRIVATE KEY-----", *PEM_BODY, "-----END RSA PRIVATE KEY-----"]
    return "".join(f"{indent}{line}\n" for line in lines)


def test_text_file_is_scrubbed_and_counted(tmp_path):
    src = tmp_path / "env.txt"
    src.write_text(f"HOME=/root\nDB_PASSWORD=hunter2hunter2\nAWS_ACCESS_KEY_ID={AWS_KEY_ID}\n")
    result = Redactor().redact_file(src, tmp_path / "out" / "env.txt", "facts/env.txt")
    assert result.path == "facts/env.txt"
    assert result.status == SCRUBBED
    assert result.counts == {"password": 1, "aws-access-key-id": 1}
    assert (tmp_path / "out" / "env.txt").read_text() == (
        "HOME=/root\nDB_PASSWORD=[REDACTED:password]\nAWS_ACCESS_KEY_ID=[REDACTED:aws-access-key-id]\n"
    )


def test_output_is_private_to_the_user(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    Redactor().redact_file(tmp_path / "a.txt", tmp_path / "b.txt")
    assert (tmp_path / "b.txt").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "content",
    [
        b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4,  # an executable
        b"PK\x03\x04" + b"\x00" * 64,  # a zip file
        b"plain text for a while\n" * 1000 + b"\x00\x01\x02 and then binary",  # NUL far from the start
    ],
    ids=["elf", "zip", "late-nul"],
)
def test_binary_file_is_dropped_and_not_written(tmp_path, content):
    (tmp_path / "blob").write_bytes(content)
    result = Redactor().redact_file(tmp_path / "blob", tmp_path / "out" / "blob")
    assert result.status == DROPPED
    assert "binary" in result.reason
    assert not (tmp_path / "out" / "blob").exists()


def test_legacy_windows_text_is_scrubbed_and_kept_in_its_code_page(tmp_path):
    """A log written in cp1252 (not valid UTF-8) is scrubbed and written back in cp1252, not dropped."""
    text = "Journal: Benutzer „Jörg“ – Passwort: Grüße€2024\r\nDB_PASSWORD=Wind0wsPw!\r\nfin café 12 €\r\n"
    (tmp_path / "app.log").write_bytes(text.encode("cp1252"))
    result = Redactor().redact_file(tmp_path / "app.log", tmp_path / "out.log")
    assert result.status == SCRUBBED
    assert result.counts == {"password": 2}
    assert (tmp_path / "out.log").read_bytes().decode("cp1252") == (
        "Journal: Benutzer „Jörg“ – Passwort: [REDACTED:password]\r\nDB_PASSWORD=[REDACTED:password]\r\n"
        "fin café 12 €\r\n"
    )
    (tmp_path / "tree").mkdir()
    (tmp_path / "out.log").rename(tmp_path / "tree" / "out.log")
    assert Redactor().verify_tree(tmp_path / "tree") == []


def test_legacy_text_is_read_as_cp1252_even_when_the_first_bytes_are_ascii(tmp_path):
    """The whole file decides: a cp1252 byte far beyond the first read still makes the file cp1252."""
    text = "plain ascii line\n" * 20000 + "token=Geheim§42\n"
    (tmp_path / "late.log").write_bytes(text.encode("cp1252"))
    result = Redactor().redact_file(tmp_path / "late.log", tmp_path / "out.log")
    assert result.status == SCRUBBED
    assert (tmp_path / "out.log").read_bytes().decode("cp1252").endswith("token=[REDACTED:token]\n")


def test_text_that_is_neither_utf8_nor_cp1252_is_dropped(tmp_path):
    # 0x81 and 0x8d are undefined in cp1252, and 0xff 0x81 is not UTF-8 either.
    (tmp_path / "odd.txt").write_bytes(b"Passwort: Gr\xff\x81\x8de\n")
    result = Redactor().redact_file(tmp_path / "odd.txt", tmp_path / "out.txt")
    assert result.status == DROPPED
    assert not (tmp_path / "out.txt").exists()


def test_utf16_with_bom_is_scrubbed_in_its_own_encoding(tmp_path):
    text = "Windows IP Configuration\r\n   DB_PASSWORD=Wind0wsPw!\r\n"
    (tmp_path / "ipconfig.txt").write_bytes(b"\xff\xfe" + text.encode("utf-16-le"))
    result = Redactor().redact_file(tmp_path / "ipconfig.txt", tmp_path / "out.txt")
    raw = (tmp_path / "out.txt").read_bytes()
    assert result.status == SCRUBBED
    assert raw[:2] == b"\xff\xfe"
    assert raw[2:].decode("utf-16-le") == "Windows IP Configuration\r\n   DB_PASSWORD=[REDACTED:password]\r\n"


def test_line_endings_and_missing_final_newline_are_kept(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\r\ntoken=abc123def\r\nlast line without newline")
    Redactor().redact_file(tmp_path / "a.txt", tmp_path / "b.txt")
    assert (tmp_path / "b.txt").read_bytes() == b"one\r\ntoken=[REDACTED:token]\r\nlast line without newline"


def test_empty_file_is_scrubbed(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    result = Redactor().redact_file(tmp_path / "empty", tmp_path / "out")
    assert (result.status, result.counts) == (SCRUBBED, {})
    assert (tmp_path / "out").read_bytes() == b""


def test_pem_block_across_many_streaming_chunks_is_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(textfiles, "CHUNK_CHARS", 256)  # the key spans ~100 chunks
    (tmp_path / "keys.txt").write_text("before\n" + pem_block() + "after\n" + pem_block("    ") + "end\n")
    result = Redactor().redact_file(tmp_path / "keys.txt", tmp_path / "out.txt")
    out = (tmp_path / "out.txt").read_text()
    assert out == "before\n[REDACTED:private-key]\nafter\n    [REDACTED:private-key]\nend\n"
    assert result.counts == {"private-key": 2}


def test_unterminated_pem_block_swallows_the_rest(tmp_path):
    (tmp_path / "cut.txt").write_text("ok\n" + pem_block()[:5000])
    Redactor().redact_file(tmp_path / "cut.txt", tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text() == "ok\n[REDACTED:private-key]\n"


def test_overlong_line_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(textfiles, "CHUNK_CHARS", 1024)
    monkeypatch.setattr(textfiles, "MAX_LINE_CHARS", 4096)
    (tmp_path / "one-line.json").write_text('{"token": "' + "x" * 10000 + '"}')
    result = Redactor().redact_file(tmp_path / "one-line.json", tmp_path / "out.json")
    assert result.status == DROPPED
    assert "longer than" in result.reason
    assert not (tmp_path / "out.json").exists()


def test_exception_while_scrubbing_drops_the_file_and_removes_output(tmp_path, monkeypatch):
    src = tmp_path / "big.log"
    src.write_text("line\n" * 50000 + "password=s3cr3t-value\n" + "line\n" * 50000)
    dst = tmp_path / "out" / "big.log"
    dst.parent.mkdir()
    dst.write_text("an older output that must not survive either\n")

    def explode(self, line):
        raise RuntimeError("detector bug while looking at password=s3cr3t-value")

    monkeypatch.setattr(scrubber.Scrubber, "scrub_line", explode)
    result = Redactor().redact_file(src, dst)
    assert result.status == DROPPED
    assert result.reason == "scrubbing failed (RuntimeError)"  # no content from the message
    assert not dst.exists()
    assert list(dst.parent.iterdir()) == []  # no partial file either


def test_missing_source_is_not_scrubbed(tmp_path):
    result = Redactor().redact_file(tmp_path / "gone.txt", tmp_path / "out.txt", "gone.txt")
    assert (result.status, result.path) == (NOT_SCRUBBED, "gone.txt")
    assert result.reason.startswith("cannot read")


def test_symlink_is_dropped_not_followed(tmp_path):
    (tmp_path / "secret.txt").write_text("password=hunter2hunter2\n")
    (tmp_path / "link.txt").symlink_to(tmp_path / "secret.txt")
    result = Redactor().redact_file(tmp_path / "link.txt", tmp_path / "out.txt")
    assert result.status == DROPPED
    assert "link" in result.reason
    assert not (tmp_path / "out.txt").exists()


def test_fifo_is_dropped_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    assert Redactor().redact_file(tmp_path / "pipe", tmp_path / "out").status == DROPPED


def test_json_stays_valid_when_line_scrubbing_would_break_it(tmp_path):
    # "token=abc\\" ends in an escaped backslash; cutting the value there would escape the closing quote.
    document = {
        "note": "token=abc\\",
        "ok": "user=alice",
        "nested": {"password": 1234, "list": ["AKIAQ3EGRD5HXW7PLMNB"]},
    }
    (tmp_path / "facts.json").write_text(json.dumps(document, indent=2) + "\n")
    result = Redactor().redact_file(tmp_path / "facts.json", tmp_path / "out.json")
    scrubbed = json.loads((tmp_path / "out.json").read_text())
    assert scrubbed == {
        "note": "token=[REDACTED:token]",
        "ok": "user=alice",
        "nested": {"password": "[REDACTED:password]", "list": ["[REDACTED:aws-access-key-id]"]},
    }
    assert result.counts == {"token": 1, "password": 1, "aws-access-key-id": 1}


def test_json_is_kept_line_by_line_when_that_stays_valid(tmp_path):
    text = '{\n  "password": "hunter2hunter2",\n  "pin": 12,\n  "token": 998877\n}\n'
    (tmp_path / "a.json").write_text(text)
    Redactor().redact_file(tmp_path / "a.json", tmp_path / "b.json")
    assert (tmp_path / "b.json").read_text() == (
        '{\n  "password": "[REDACTED:password]",\n  "pin": 12,\n  "token": "[REDACTED:token]"\n}\n'
    )


def make_tree(root: Path) -> None:
    (root / "logs" / "app").mkdir(parents=True)
    (root / "logs" / "app" / "app.log").write_text("token=abc123def456\n")
    (root / "facts.json").write_text('{"password": "x1y2z3"}\n')
    (root / "core.bin").write_bytes(b"\x00\x01\x02")
    (root / "elsewhere").mkdir()
    (root / "logs" / "linked-dir").symlink_to(root / "elsewhere")
    (root / "logs" / "linked-file").symlink_to(root / "facts.json")
    os.mkfifo(root / "logs" / "fifo")


def test_redact_tree_reports_every_entry(tmp_path):
    make_tree(tmp_path / "src")
    results = {r.path: r for r in Redactor().redact_tree(tmp_path / "src", tmp_path / "out")}
    assert {path: r.status for path, r in results.items()} == {
        "core.bin": DROPPED,
        "facts.json": SCRUBBED,
        "logs/app/app.log": SCRUBBED,
        "logs/fifo": DROPPED,
        "logs/linked-dir": DROPPED,
        "logs/linked-file": DROPPED,
    }
    assert results["logs/app/app.log"].counts == {"token": 1}
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["facts.json", "logs/app/app.log"]


def test_redact_tree_refuses_an_output_inside_the_input(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    with pytest.raises(ValueError):
        Redactor().redact_tree(tmp_path, tmp_path / "out")


def test_verify_tree_reports_what_is_still_there(tmp_path):
    (tmp_path / "ok.txt").write_text("nothing here\n")
    (tmp_path / "leak.txt").write_text("line one\nexport GITHUB_TOKEN=ghp_" + "a" * 36 + "\n" + pem_block())
    (tmp_path / "blob.bin").write_bytes(b"\x00\xff")
    (tmp_path / "link").symlink_to(tmp_path / "ok.txt")
    findings = {(f.path, f.line, f.detector) for f in Redactor().verify_tree(tmp_path)}
    assert findings == {
        ("leak.txt", 2, "github-token"),
        ("leak.txt", 3, "private-key"),
        # The second look, with its own patterns, sees the same two lines.
        ("leak.txt", 2, "second-look-known-key-format"),
        ("leak.txt", 3, "second-look-private-key"),
        ("blob.bin", 0, "unscannable"),
        ("link", 0, "symlink"),
    }


def test_verify_tree_finds_an_original_that_leaked_past_its_pseudonym(tmp_path):
    redactor = Redactor(RedactionOptions(network=True))
    redactor.redact_text("peer 198.51.100.23 connected\n")
    # A version context keeps the dotted quad, but the same value was an address elsewhere.
    (tmp_path / "fw.txt").write_text("ok\nfirmware version 198.51.100.23\n")
    assert [(f.path, f.line, f.detector) for f in redactor.verify_tree(tmp_path)] == [("fw.txt", 2, "ipv4")]


def test_verify_tree_does_not_grow_the_pseudonym_map(tmp_path):
    redactor = Redactor(RedactionOptions(network=True))
    (tmp_path / "a.txt").write_text("10.0.0.5\n")
    assert [f.detector for f in redactor.verify_tree(tmp_path)] == ["ipv4"]
    assert len(redactor.pseudonyms) == 0
