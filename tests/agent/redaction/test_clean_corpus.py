"""Version strings and ordinary text come out byte-identical.

``corpus/clean/versions`` holds package listings (dpkg, rpm, apt, pip, winget), os-release,
uname and tool versions, hashes, UUIDs and dates; it must survive even with network
pseudonymisation on, because ``1.2.3.4`` there is a version, not an address.
``corpus/clean/ordinary`` holds journal lines, prose and configs that mention passwords,
tokens and secrets without containing any.
"""

from __future__ import annotations

from itertools import zip_longest
from pathlib import Path

import pytest

from agent.redaction import SCRUBBED, RedactionOptions, Redactor
from tests.agent.redaction.corpus_manifest import CORPUS

VERSIONS = sorted((CORPUS / "clean" / "versions").glob("*.txt"))
ORDINARY = sorted((CORPUS / "clean" / "ordinary").glob("*.txt"))

CASES = [(path, RedactionOptions()) for path in VERSIONS + ORDINARY] + [
    (path, RedactionOptions(network=True)) for path in VERSIONS
]


def _changed_lines(before: str, after: str) -> list[str]:
    pairs = zip_longest(before.splitlines(), after.splitlines(), fillvalue="")
    return [f"- {a}\n+ {b}" for a, b in pairs if a != b]


def test_the_clean_corpus_is_big_enough():
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in VERSIONS + ORDINARY)
    assert len(VERSIONS) >= 3 and len(ORDINARY) >= 3
    assert lines >= 300


@pytest.mark.parametrize(
    ("path", "options"), CASES, ids=lambda v: v.name if isinstance(v, Path) else ("network" if v.network else "default")
)
def test_clean_file_is_byte_identical(path, options, tmp_path):
    result = Redactor(options).redact_file(path, tmp_path / path.name)
    after = (tmp_path / path.name).read_bytes()
    before = path.read_bytes()
    assert result.status == SCRUBBED
    assert after == before, "\n".join(_changed_lines(before.decode(), after.decode()))
    assert result.counts == {}


@pytest.mark.parametrize("path", VERSIONS, ids=lambda p: p.name)
def test_verify_finds_nothing_in_versions_with_network_on(path, tmp_path):
    (tmp_path / path.name).write_bytes(path.read_bytes())
    assert Redactor(RedactionOptions(network=True)).verify_tree(tmp_path) == []
