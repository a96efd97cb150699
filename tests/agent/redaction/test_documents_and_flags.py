"""Redactor.redact_document and Redactor.flags: JSON documents redacted like JSON files, and
strings judged the way the final check judges files, without writing anything."""

from __future__ import annotations

import json

import pytest

from agent.redaction import RedactionOptions, Redactor

AWS_KEY_ID = "AKIAQ3EGRD5HXW7PLMNB"


def test_a_document_is_redacted_as_its_json_text():
    document = {"password": "hunter2hunter2", "pin": 12, "env": [f"AWS_ACCESS_KEY_ID={AWS_KEY_ID}"], "n": None}
    redacted, counts = Redactor().redact_document(document)
    assert redacted == {"password": "[REDACTED:password]", "pin": 12,
                        "env": ["AWS_ACCESS_KEY_ID=[REDACTED:aws-access-key-id]"], "n": None}
    assert counts == {"password": 1, "aws-access-key-id": 1}
    assert document["password"] == "hunter2hunter2"  # the caller's document is left alone


def test_a_document_whose_text_redaction_breaks_json_is_redacted_value_by_value():
    # "token=abc\\" ends in an escaped backslash; cutting the value there would escape the closing quote.
    document = {"note": "token=abc\\", "ok": "user=alice", "nested": {"password": 1234, "list": [AWS_KEY_ID]}}
    redactor = Redactor()
    with pytest.raises(ValueError):  # what redacting the text alone would give
        json.loads(redactor.redact_text(json.dumps(document, indent=2, ensure_ascii=False))[0])
    redacted, counts = redactor.redact_document(document)
    assert redacted == {"note": "token=[REDACTED:token]", "ok": "user=alice",
                        "nested": {"password": "[REDACTED:password]", "list": ["[REDACTED:aws-access-key-id]"]}}
    assert counts == {"token": 1, "password": 1, "aws-access-key-id": 1}


def test_scalars_and_lists_are_documents_too():
    assert Redactor().redact_document(f"key {AWS_KEY_ID}") == ("key [REDACTED:aws-access-key-id]",
                                                               {"aws-access-key-id": 1})
    assert Redactor().redact_document([1, "two", None]) == ([1, "two", None], {})


def test_flags_names_what_the_final_check_would_find_in_each_text(tmp_path):
    redactor = Redactor(RedactionOptions(hostnames=True, known_hostnames=("buildbox7",)))
    redactor.redact_text("connected to buildbox7")  # the map now holds the original
    texts = ["all quiet", f"id {AWS_KEY_ID}", "seen on buildbox7", "DB_PASSWORD=hunter2hunter2"]
    flagged = redactor.flags(texts)
    assert flagged == {f"id {AWS_KEY_ID}": "aws-access-key-id", "seen on buildbox7": "hostname",
                       "DB_PASSWORD=hunter2hunter2": "password"}
    # The same judgement as verify_tree over files holding those texts.
    for number, text in enumerate(texts):
        (tmp_path / f"{number}.txt").write_text(text + "\n")
    found = {texts[int(f.path.split(".")[0])] for f in redactor.verify_tree(tmp_path)}
    assert found == set(flagged)
    assert not list(tmp_path.glob("**/values.txt"))


def test_flags_records_nothing_in_the_pseudonym_map():
    redactor = Redactor(RedactionOptions(network=True))
    assert redactor.flags(["reach 10.1.2.3 now"]) == {"reach 10.1.2.3 now": "ipv4"}
    assert not redactor.pseudonyms.spellings("ipv4")
