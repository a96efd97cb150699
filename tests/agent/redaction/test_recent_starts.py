"""Line starts searched once for a long text that the scrub and the final check both search."""

from __future__ import annotations

from agent.redaction import RedactionOptions, Redactor, detectors, tree
from agent.redaction.detectors import _RecentStarts, build_pipeline
from agent.redaction.pseudonyms import PseudonymMap
from agent.redaction.triggers import line_starts
from tests.agent.redaction.corpus_manifest import CORPUS


def long_texts() -> list[str]:
    texts = []
    for name in ("secrets", "clean", "identities"):
        for entry in tree.walk(CORPUS / name):
            if entry.kind == tree.FILE:
                try:
                    texts.append(entry.path.read_text(encoding="utf-8") * 3)
                except UnicodeDecodeError:
                    continue
    return [text for text in texts if len(text) >= _RecentStarts.MIN_CHARS]


def test_a_text_searched_again_by_another_pipeline_gets_the_same_starts_without_a_search(monkeypatch) -> None:
    searches = []
    real = detectors.line_starts
    monkeypatch.setattr(detectors, "line_starts", lambda *args: searches.append(1) or real(*args))
    monkeypatch.setattr(detectors, "_RECENT_STARTS", _RecentStarts())
    texts = long_texts()
    assert len(texts) > 5
    first, second = build_pipeline(RedactionOptions(), PseudonymMap()), build_pipeline(RedactionOptions(), PseudonymMap())
    first._refresh()
    for text in texts:
        expected = line_starts(text, 0, first._literals, first._patterns)
        assert first.line_starts(text) == expected
        copy = "".join(list(text))  # equal text, another object: as read back from the scrubbed file
        assert copy is not text
        before = len(searches)
        assert second.line_starts(copy) == expected
        assert len(searches) == before, "the second search of the same text was looked up"
    assert len(searches) == len(texts)


def test_other_triggers_search_again(monkeypatch) -> None:
    monkeypatch.setattr(detectors, "_RECENT_STARTS", _RecentStarts())
    text = "nothing here\n" * 400 + "jdoe logged in\n"
    plain = build_pipeline(RedactionOptions(), PseudonymMap())
    named = build_pipeline(RedactionOptions(usernames=True, known_usernames=("jdoe",)), PseudonymMap())
    assert plain.line_starts(text) == []
    assert named.line_starts(text) == [len("nothing here\n") * 400], "a known user name is a trigger of its own"


def test_what_is_kept_is_bounded() -> None:
    recent = _RecentStarts()
    pipeline = build_pipeline(RedactionOptions(), PseudonymMap())
    pipeline._refresh()
    text = "x" * (_RecentStarts.MAX_CHARS // 3 - 1)
    for i in range(10):
        recent.starts(f"{i}{text}", pipeline._literals, tuple(pipeline._patterns))
    assert recent._chars <= _RecentStarts.MAX_CHARS and len(recent._starts) == 3


def test_a_share_of_the_corpus_redacts_the_same_with_lookups(tmp_path, monkeypatch) -> None:
    """The whole redaction, first pass and final check, finds and writes the same with the lookups as without."""
    results = []
    for recent in (_RecentStarts(), None):
        monkeypatch.setattr(_RecentStarts, "MIN_CHARS", 1 if recent is not None else 1 << 40)
        monkeypatch.setattr(detectors, "_RECENT_STARTS", recent or _RecentStarts())
        redactor = Redactor(RedactionOptions())
        out = tmp_path / f"out-{len(results)}"
        redactor.redact_tree(CORPUS / "secrets", out)
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        findings = sorted((f.path, f.line, f.detector) for f in redactor.verify_tree(out))
        results.append((files, findings))
    assert results[0] == results[1]
