"""protocol.bundle: a manifest written by the agent before the model existed reads back and dumps
to the same bytes, and a manifest that is not one is refused with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol.bundle import MANIFEST_NAME, parse_summary, raw_member
from protocol.manifest import Manifest, parse_manifest
from protocol.errors import InvalidInputError

#: A manifest.json written by the agent of schema version 1 (trimmed to three items), before protocol.bundle.
STORED = Path(__file__).parent / "fixtures" / "manifest-v1.json"


def test_a_stored_manifest_round_trips_byte_for_byte():
    text = STORED.read_text(encoding="utf-8")
    manifest = parse_manifest(text.encode("utf-8"))
    assert manifest.to_json() == text
    assert manifest.totals.files == 22 and manifest.hostname == "pc-1042"
    assert manifest.created_at.tzinfo is not None
    bundled = [item for item in manifest.items if item.file is not None]
    assert [item.file for item in bundled] == [raw_member(item.path) for item in bundled]
    assert manifest.documents["report.html"].size == 28342


def _stored() -> dict:
    return json.loads(STORED.read_text(encoding="utf-8"))


@pytest.mark.parametrize("change, problem", [
    (lambda m: m.pop("totals"), "totals: Field required"),
    (lambda m: m["totals"].update(files="many"), "totals.files"),
    (lambda m: m.update(schema_version=2), "schema_version"),
    (lambda m: m["items"][0]["redaction"].update(status="copied"), "items.0.redaction.status"),
    (lambda m: m["items"][0].update(size=-1), "items.0.size"),
    (lambda m: m.update(surprise=True), "surprise: Extra inputs are not permitted"),
    (lambda m: m.update(created_at="last Tuesday"), "created_at"),
])
def test_a_manifest_that_is_not_one_is_refused_with_where_it_breaks(change, problem):
    manifest = _stored()
    change(manifest)
    with pytest.raises(InvalidInputError) as err:
        parse_manifest(json.dumps(manifest).encode(), where="The bundle's manifest.json")
    assert err.value.message.startswith("The bundle's manifest.json is not a valid bundle manifest")
    assert problem in err.value.message


def test_the_error_quotes_a_senders_field_name_only_briefly():
    manifest = _stored()
    manifest["x" * 100_000] = 1
    with pytest.raises(InvalidInputError) as err:
        parse_manifest(json.dumps(manifest))
    assert "Extra inputs are not permitted" in err.value.message and len(err.value.message) < 400


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe", b"[]", b"null"])
def test_garbage_is_refused(data):
    with pytest.raises(InvalidInputError, match=MANIFEST_NAME):
        parse_manifest(data)


def test_a_summary_must_be_a_json_object():
    assert parse_summary(b'{"os": {"name": "Linux"}}') == {"os": {"name": "Linux"}}
    for data in (b"[1, 2]", b"nope"):
        with pytest.raises(InvalidInputError, match="summary.json"):
            parse_summary(data)


def test_a_new_manifest_has_every_field_readers_need():
    fields = set(Manifest.model_fields)
    assert fields == set(_stored())
