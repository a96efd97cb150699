"""Every secret planted in the corpus is gone after redaction, by the detector meant to catch it.

The corpus (``corpus/secrets``, ``corpus/identities``) holds realistic files - env dumps,
configs in INI/YAML/TOML/JSON/XML, shell history, process lists, HTTP traces, logs,
PEM keys - with secrets in many spellings; ``corpus/planted.json`` lists each value.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest

from agent.redaction import SCRUBBED, RedactionOptions, Redactor, detectors
from agent.redaction.detectors import build_pipeline
from agent.redaction.pseudonyms import PseudonymMap
from tests.agent.redaction.corpus_manifest import CORPUS, load_manifest, planted_values

PLANTED = planted_values()


def _split(relpath: str) -> tuple[str, str]:
    corpus_dir, _, name = relpath.partition("/")
    return corpus_dir, name


def test_the_corpus_is_big_and_covers_every_detector():
    """Adding a detector without planting its secrets in the corpus fails here."""
    assert len(PLANTED) >= 300
    assert len({p.value for p in PLANTED}) >= 250
    every_detector = set(
        build_pipeline(RedactionOptions(network=True, hostnames=True, usernames=True), PseudonymMap()).names
    )
    assert every_detector - {p.detector for p in PLANTED} == set()


def test_every_corpus_file_is_scrubbed(redacted_corpus):
    for corpus in redacted_corpus.values():
        assert corpus.results, "the corpus directory is empty"
        for result in corpus.results.values():
            assert result.status == SCRUBBED, result


@pytest.mark.parametrize("planted", PLANTED, ids=lambda p: f"{p.file}:{p.detector}:{p.value[:12]}")
def test_planted_value_is_gone(redacted_corpus, planted):
    corpus_dir, name = _split(planted.file)
    output = redacted_corpus[corpus_dir].text(name)
    assert planted.value in (CORPUS / planted.file).read_text(encoding="utf-8"), "corpus and planted.json disagree"
    assert planted.value not in output
    # A value with spaces must be gone whole, not just its first word.
    for word in re.findall(r"\S{5,}", planted.value):
        assert word not in output, f"{word!r} of {planted.value!r} survived"


def _expected_detectors() -> list[tuple[str, str]]:
    pairs = defaultdict(set)
    for p in PLANTED:
        pairs[p.file].add(p.detector)
    return sorted((f, d) for f, ds in pairs.items() for d in ds)


@pytest.mark.parametrize(("relpath", "detector"), _expected_detectors())
def test_expected_detector_fired(redacted_corpus, relpath, detector):
    corpus_dir, name = _split(relpath)
    assert redacted_corpus[corpus_dir].results[name].counts.get(detector, 0) > 0


@pytest.mark.parametrize("kept", load_manifest()["kept"], ids=lambda k: k["value"])
def test_values_that_identify_nothing_are_kept(redacted_corpus, kept):
    corpus_dir, name = _split(kept["file"])
    assert kept["value"] in redacted_corpus[corpus_dir].text(name)


@pytest.mark.parametrize("corpus_dir", ["secrets", "identities"])
def test_verify_finds_nothing_after_redaction(redacted_corpus, corpus_dir):
    corpus = redacted_corpus[corpus_dir]
    assert corpus.redactor.verify_tree(corpus.out) == []


@pytest.mark.parametrize("corpus_dir", ["secrets", "identities"])
def test_verify_finds_every_corpus_file_before_redaction(redacted_corpus, corpus_dir):
    """The same detectors see the raw corpus: verification would have stopped an unscrubbed upload."""
    corpus = redacted_corpus[corpus_dir]
    flagged = {f.path for f in corpus.redactor.verify_tree(CORPUS / corpus_dir)}
    assert flagged == set(corpus.results)


@pytest.mark.parametrize("corpus_dir", ["secrets", "identities"])
def test_redacting_the_output_again_changes_nothing(redacted_corpus, corpus_dir, tmp_path):
    corpus = redacted_corpus[corpus_dir]
    again = corpus.redactor.redact_tree(corpus.out, tmp_path)
    for result in again:
        assert result.counts == {}, result
        assert (tmp_path / result.path).read_bytes() == (corpus.out / result.path).read_bytes()


def test_json_files_stay_valid_json(redacted_corpus):
    names = [n for n in redacted_corpus["secrets"].results if n.endswith(".json")]
    assert len(names) >= 2
    for name in names:
        json.loads(redacted_corpus["secrets"].text(name))


def test_every_line_is_judged_the_same_without_the_line_selection(redacted_corpus, monkeypatch):
    """The triggers only save time: giving every detector every line yields the same output."""

    def every_detector(self, line, hit):
        for detector in self.detectors:
            line = detector.apply(line, hit)
        return line

    monkeypatch.setattr(detectors, "line_starts", lambda *args: None)
    monkeypatch.setattr(detectors.Pipeline, "apply", every_detector)
    for corpus_dir, corpus in redacted_corpus.items():
        redactor = Redactor(corpus.redactor.options)
        for name in corpus.results:
            text, _ = redactor.redact_text((CORPUS / corpus_dir / name).read_text(encoding="utf-8"))
            assert text == corpus.text(name), name
