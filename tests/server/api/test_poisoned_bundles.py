"""A poisoned bundle never breaks a ticket: refused at upload, rendered safely if stored, and its
download named safely whatever the PC's hostname holds (RFC 6266 / RFC 5987)."""

from __future__ import annotations

import json
from urllib.parse import unquote

import pytest
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError

from protocol.bundle import DOCUMENT_MAX_DEPTH, WITHHELD
from server.models import Bundle
from tests.server.api.test_upload_quotas import deliver, paired, server_settings  # noqa: F401 - fixtures
from tests.support.bundles import manifest_bytes, write_archive

REPORT = ("helpline-bundle/report.html", b"<!doctype html><title>report</title>")


def nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


SUMMARY_POISONS = {
    "escaped NUL": b'{"os": {"name": "Test\\u0000OS"}}',
    "NUL in a key": b'{"\\u0000": 1}',
    "lone surrogate": b'{"os": {"name": "\\ud83d"}}',
    "lone low surrogate in a list": b'{"items": ["ok", "\\udc00x"]}',
    "900 levels": nested(900).encode(),
    "100000 levels": ("[" * 100_000 + "]" * 100_000).encode(),
    "just too deep": nested(DOCUMENT_MAX_DEPTH + 1).encode(),
    "NaN": b'{"load": NaN}',
    "Infinity": b'{"load": -Infinity}',
    "overflowing float": b'{"load": 1e400}',
    "huge integer": b'{"bytes": 1' + b"0" * 40 + b"}",
    "integer past 2**53": b'{"bytes": 9007199254740993}',
    "not UTF-8": b'{"os": "\xff\xfe"}',
    "UTF-16": '{"os": "x"}'.encode("utf-16"),
    "CESU surrogate bytes": b'{"os": "\xed\xa0\x80"}',
    "not an object": b"[1, 2]",
}


def archive_with(tmp_path, name: str, manifest: bytes, summary: bytes) -> bytes:
    path = write_archive(tmp_path / f"{abs(hash(name))}.tar.gz", [
        ("helpline-bundle/manifest.json", manifest), ("helpline-bundle/summary.json", summary), REPORT])
    return path.read_bytes()


def refused_at_completion(helpline, pc, number: str, data: bytes) -> dict:
    from tests.server.api.test_uploads import put_chunk, start

    upload = start(helpline, pc, number, data)
    for index in range(upload["chunks"]):
        assert put_chunk(helpline, pc, upload, index, data).status_code == 200
    response = helpline.call("POST", f"uploads/{upload['id']}/complete", pc)
    assert response.status_code == 422, response.text
    return response.json()["error"]


def ticket_is_intact(helpline, engineer: str, number: str, bundle: dict, data: bytes) -> None:
    assert [b["id"] for b in helpline.ok("GET", f"tickets/{number}/bundles", engineer)] == [bundle["id"]]
    assert helpline.call("GET", f"tickets/{number}", engineer).status_code == 200
    assert helpline.ok("GET", f"bundles/{bundle['id']}", engineer)["summary"]["os"]["name"] == "Test OS"
    assert helpline.call("GET", f"bundles/{bundle['id']}/archive", engineer).content == data


@pytest.mark.parametrize("poison", list(SUMMARY_POISONS))
def test_a_poisoned_summary_is_refused_at_upload_and_earlier_bundles_stay(helpline, paired, tmp_path, poison):  # noqa: F811
    engineer, number, pc = paired
    good = write_archive(tmp_path / "good.tar.gz").read_bytes()
    bundle = deliver(helpline, pc, number, good)
    error = refused_at_completion(helpline, pc, number, archive_with(tmp_path, poison, manifest_bytes(), SUMMARY_POISONS[poison]))
    assert error["message"].startswith("The bundle's summary.json ") and "\n" not in error["message"]
    assert "\x00" not in error["message"] and len(error["message"]) < 200
    [event] = helpline.audit("bundle.refused")
    assert event.details["reason"] == error["message"]
    ticket_is_intact(helpline, engineer, number, bundle, good)


def manifest_with(change) -> bytes:
    document = json.loads(manifest_bytes())
    change(document)
    return json.dumps(document).encode()


MANIFEST_POISONS = {
    "NUL in the hostname": manifest_bytes().replace(b'"test-pc"', b'"test\\u0000pc"'),
    "lone surrogate in the platform": manifest_bytes().replace(b'"linux"', b'"lin\\udfffux"'),
    "deep extra": manifest_with(lambda d: d.update(extra=json.loads(nested(900)))),
    "absurd file count": manifest_with(lambda d: d["totals"].update(files=10**12)),
    "absurd byte count": manifest_with(lambda d: d["totals"].update(bytes=10**30)),
}


@pytest.mark.parametrize("poison", list(MANIFEST_POISONS))
def test_a_poisoned_manifest_is_refused_at_upload(helpline, paired, tmp_path, poison):  # noqa: F811
    engineer, number, pc = paired
    good = write_archive(tmp_path / "good.tar.gz").read_bytes()
    bundle = deliver(helpline, pc, number, good)
    summary = json.dumps({"os": {"name": "Test OS"}}).encode()
    error = refused_at_completion(helpline, pc, number, archive_with(tmp_path, poison, MANIFEST_POISONS[poison], summary))
    assert error["message"].startswith("The bundle's manifest.json ")
    assert len(helpline.audit("bundle.refused")) == 1
    ticket_is_intact(helpline, engineer, number, bundle, good)


STORED_POISONS = {
    "escaped NUL": ('{"os": {"name": "a\\u0000b"}}', {"os": {"name": "a\ufffdb"}}),
    "lone surrogate": ('{"os": {"name": "\\ud800"}}', {"os": {"name": "\ufffd"}}),
    "900 levels": (nested(900), None),
    "5000 levels": ("[" * 5000 + "]" * 5000, None),
    "NaN": ('{"os": {"name": "x"}, "load": NaN}', {"os": {"name": "x"}, "load": None}),
    "not JSON": ("{", None),
}


@pytest.mark.parametrize("poison", list(STORED_POISONS))
def test_a_summary_stored_before_the_checks_never_breaks_the_bundle_page(helpline, paired, tmp_path, poison):  # noqa: F811
    engineer, number, pc = paired
    bundle = deliver(helpline, pc, number, write_archive(tmp_path / "good.tar.gz").read_bytes())
    stored, expected = STORED_POISONS[poison]
    try:
        with helpline.db() as session:
            session.connection().exec_driver_sql(
                "UPDATE bundles SET summary = %s WHERE id = %s" if session.bind.dialect.name == "postgresql"
                else "UPDATE bundles SET summary = ? WHERE id = ?", (stored, bundle["id"]))
    except DBAPIError:
        pytest.skip("this database refuses to store it in the first place")
    shown = helpline.call("GET", f"bundles/{bundle['id']}", engineer)
    assert shown.status_code == 200, shown.text
    summary = shown.json()["summary"]
    if expected is not None:
        assert summary == expected
    else:
        assert WITHHELD in json.dumps(summary)
    assert helpline.call("GET", f"tickets/{number}", engineer).status_code == 200
    assert [b["id"] for b in helpline.ok("GET", f"tickets/{number}/bundles", engineer)] == [bundle["id"]]


HOSTNAMES = {
    "cyrillic": ("пк-бухгалтерия", "пк-бухгалтерия"),
    "greek": ("υπολογιστής-λογιστηρίου", "υπολογιστής-λογιστηρίου"),
    "cjk": ("会計部のパソコン", "会計部のパソコン"),
    "emoji": ("pc-🖨️-👨‍👩‍👧", "pc-🖨️-👨‍👩‍👧"),
    "right-to-left": ("מחשב-\u200fהנהלת-חשבונות", "מחשב-הנהלת-חשבונות"),
    "override that hides an extension": ("pc\u202eexe.gz", "pcexe.gz"),
    "CR/LF header injection": ("pc\r\nSet-Cookie: stolen=1", "pcSet-Cookie:_stolen=1"),
    "quotes and separators": ('a"b;c%d\\e/f', 'a"b;c%d_e_f'),
    "NUL and escape": ("pc\x00\x1b[2J", "pc[2J"),
    "latin-1": ("poste-comptabilité", "poste-comptabilité"),
}


@pytest.mark.parametrize("kind", list(HOSTNAMES))
def test_downloads_are_named_safely_whatever_the_hostname(helpline, paired, tmp_path, kind):  # noqa: F811
    engineer, number, pc = paired
    data = write_archive(tmp_path / "good.tar.gz").read_bytes()
    bundle = deliver(helpline, pc, number, data)
    hostname, kept = HOSTNAMES[kind]
    try:
        with helpline.db() as session:
            session.execute(update(Bundle).where(Bundle.id == bundle["id"]).values(hostname=hostname))
    except DBAPIError:
        pytest.skip("this database refuses to store it in the first place")
    response = helpline.call("GET", f"bundles/{bundle['id']}/archive", engineer)
    assert response.status_code == 200 and response.content == data
    header = response.headers["content-disposition"]
    header.encode("ascii")  # nothing outside ASCII reaches the wire
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in header)
    plain, _, extended = header.partition("; filename*=UTF-8''")
    assert plain.startswith('attachment; filename="') and plain.endswith('"')
    fallback = plain[len('attachment; filename="'):-1]
    assert not set(fallback) & set('"\\%;/') and fallback.endswith(".tar.gz")
    assert extended and " " not in extended and ";" not in extended
    name = unquote(extended, errors="strict")
    assert name.startswith(f"{number}-{kept}-") and name.endswith(".tar.gz"), name
