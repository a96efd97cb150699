"""Fixtures for the redaction tests: the corpus, its list of planted values, and redacted copies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.redaction import FileRedaction, Redactor
from tests.agent.redaction.corpus_manifest import CORPUS, options_for


@dataclass
class RedactedCorpus:
    """A corpus directory after ``redact_tree``: the redactor, its results and the output root."""

    redactor: Redactor
    results: dict[str, FileRedaction]
    out: Path

    def text(self, relpath: str) -> str:
        return (self.out / relpath).read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def redacted_corpus(tmp_path_factory) -> dict[str, RedactedCorpus]:
    """The secrets and identities corpora, each redacted once with one Redactor."""
    done: dict[str, RedactedCorpus] = {}
    for name in ("secrets", "identities"):
        redactor = Redactor(options_for(name))
        out = tmp_path_factory.mktemp(f"redacted-{name}")
        results = redactor.redact_tree(CORPUS / name, out)
        done[name] = RedactedCorpus(redactor, {r.path: r for r in results}, out)
    return done
