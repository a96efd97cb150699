"""The lines holding a trigger literal: found by an Aho-Corasick automaton where the package is installed,
by the combined regex otherwise, and the same lines either way."""

from __future__ import annotations

import pytest

from agent.redaction import RedactionOptions, Redactor, detectors, second_look, tree, triggers
from agent.redaction.detectors import build_pipeline
from agent.redaction.pseudonyms import PseudonymMap
from tests.agent.redaction.corpus_manifest import CORPUS


def _pipeline_literals(options: RedactionOptions) -> tuple[str, ...]:
    pipeline = build_pipeline(options, PseudonymMap())
    pipeline.line_starts("")  # builds its literal index
    return pipeline._literals


LITERAL_SETS = {
    "default": _pipeline_literals(RedactionOptions()),
    "all options": _pipeline_literals(RedactionOptions(network=True, hostnames=True, usernames=True,
                                                       known_hostnames=("ws-0042",), known_usernames=("anna",))),
    "second look": second_look._CANDIDATE_LITERALS,
}


def corpus_texts() -> list[str]:
    texts = []
    for name in ("secrets", "clean", "identities"):
        for entry in tree.walk(CORPUS / name):
            if entry.kind == tree.FILE:
                try:
                    texts.append(entry.path.read_text(encoding="utf-8"))
                except UnicodeDecodeError:
                    continue
    return texts


def edge_texts() -> list[str]:
    long_line = "x" * (3 * triggers.SLICE_CHARS) + " password=1 " + "y" * 100
    return [
        "",
        "password",  # no line break at the end
        "\n\n\npassword\n",
        "the 密码 is here\nand パスワード there\nplain\n",
        "emoji \U0001F600 before the token: abc\nnothing\n",
        "$$$$$$$$$$@@@@@@@@\n" * 5000,  # a match at every character
        f"short\n{long_line}\nshort again with a key\n",  # a line longer than a slice
        ("filler line without anything\n" * 700) + "bearer abc\n" + ("more filler\n" * 700),  # across slices
        "a lone \udcff surrogate and a password\nnext line with a token\n",
    ]


def _regex_only(monkeypatch) -> None:
    monkeypatch.setattr(triggers, "ahocorasick_rs", None)
    triggers._automaton.cache_clear()


@pytest.mark.parametrize("name", sorted(LITERAL_SETS))
def test_the_automaton_finds_the_lines_the_regex_finds(monkeypatch, name: str) -> None:
    literals = LITERAL_SETS[name]
    texts = [text.lower() for text in corpus_texts() + edge_texts()]
    assert len(texts) > 20
    positions = [(text, pos) for text in texts for pos in sorted({0, len(text) // 3, len(text) // 2})]
    triggers._automaton.cache_clear()
    with_automaton = [triggers.literal_line_starts(text, pos, literals) for text, pos in positions]
    _regex_only(monkeypatch)
    with_regex = [triggers.literal_line_starts(text, pos, literals) for text, pos in positions]
    assert with_automaton == with_regex
    assert sum(map(len, with_regex)) > 50  # the texts hold triggers: the comparison is not of empty sets


def test_the_automaton_is_used_where_the_package_is_installed(monkeypatch) -> None:
    pytest.importorskip("ahocorasick_rs")
    triggers._automaton.cache_clear()
    searched = []
    real = triggers._regex_starts
    monkeypatch.setattr(triggers, "_regex_starts", lambda *args: searched.append(1) or real(*args))
    text = ("plain line\n" * 100 + "password=1\n") * 10
    assert triggers.literal_line_starts(text, 0, LITERAL_SETS["default"])
    assert searched == []


def test_a_pipeline_scrubs_the_same_without_the_package(monkeypatch) -> None:
    texts = [text * 3 for text in corpus_texts()]  # long ones too: their line starts are kept for a second search
    monkeypatch.setattr(detectors, "_RECENT_STARTS", detectors._RecentStarts())
    with_automaton = [Redactor(RedactionOptions()).redact_text(text) for text in texts]
    _regex_only(monkeypatch)
    monkeypatch.setattr(detectors, "_RECENT_STARTS", detectors._RecentStarts())
    with_regex = [Redactor(RedactionOptions()).redact_text(text) for text in texts]
    assert with_automaton == with_regex


@pytest.mark.parametrize("name", sorted(LITERAL_SETS))
def test_the_literals_a_line_holds_are_the_same_with_the_automaton(monkeypatch, name: str) -> None:
    literals = LITERAL_SETS[name]
    ascii_literals = tuple(lit for lit in literals if lit.isascii())
    lines = [line.lower() for text in corpus_texts() + edge_texts() for line in text.split("\n")]
    lines += ["passwordpasswd", "the password is pwd and passwd", "密码密碼 pass", "a lone \udcff password"]
    triggers._automaton.cache_clear()
    with_automaton = [triggers.literals_in(line, literals, ascii_literals) for line in lines]
    _regex_only(monkeypatch)
    by_search = [triggers.literals_in(line, literals, ascii_literals) for line in lines]
    assert with_automaton == by_search
    assert sum(len(found) > 1 for found in by_search) > 5  # lines holding several literals, overlapping ones too


def test_a_line_longer_than_a_slice_is_searched_literal_by_literal(monkeypatch) -> None:
    pytest.importorskip("ahocorasick_rs")
    literals = LITERAL_SETS["default"]
    triggers._automaton.cache_clear()
    read = []
    real = triggers._automaton
    monkeypatch.setattr(triggers, "_automaton", lambda found: read.append(1) or real(found))
    line = "$" * (triggers.SLICE_CHARS + 1) + " password"
    assert triggers.literals_in(line, literals) == {lit for lit in literals if lit in line}
    assert read == []  # no automaton asked: it would have listed a match for every "$"
    assert triggers.literals_in("a short password line", literals) and read == [1]


def _index_by_hand(groups: tuple[tuple[str, ...], ...], extra: tuple[str, ...]):
    """The literal index as its definition reads: the literals no other literal is within, and for each, the
    detectors with a literal it is within."""
    literals = {lit for group in groups for lit in group} | set(extra)
    shortest = tuple(sorted(lit for lit in literals if not any(o != lit and o in lit for o in literals)))
    by_literal = {s: tuple(i for i, group in enumerate(groups) if any(s in lit for lit in group)) for s in shortest}
    return shortest, by_literal, tuple(lit for lit in shortest if lit.isascii())


@pytest.mark.parametrize("automaton", [True, False], ids=["automaton", "regex only"])
@pytest.mark.parametrize("seed", range(6))
def test_the_literal_index_is_the_one_its_definition_gives(monkeypatch, automaton: bool, seed: int) -> None:
    # Which literals are searched, and which detectors each wakes, come from one pass of the automaton per
    # literal (or a search per literal without it): the same index as comparing every literal with every other.
    import random

    if not automaton:
        _regex_only(monkeypatch)
    rng = random.Random(seed)
    words = list(_pipeline_literals(RedactionOptions())) + ["pass", "passwort", "wort", "kennwort", "pw", "clé", "é"]
    groups = tuple(tuple(rng.sample(words, rng.randint(1, 6))) for _ in range(rng.randint(3, 40)))
    extra = tuple(rng.sample(words, 3))
    detectors._literal_index.cache_clear()
    try:
        assert detectors._literal_index(groups, extra) == _index_by_hand(groups, extra)
    finally:
        detectors._literal_index.cache_clear()
        triggers._automaton.cache_clear()  # none of the index's automatons outlive the test


def test_literals_within_finds_overlapping_and_nested_literals(monkeypatch) -> None:
    literals = ("pass", "password", "word", "sword", "wort", "clé")
    texts = ("password", "passwort", "clé-sword", "nothing")
    expected = [{"pass", "password", "word", "sword"}, {"pass", "wort"}, {"clé", "word", "sword"}, set()]
    assert triggers.literals_within(texts, literals) == expected
    _regex_only(monkeypatch)
    assert triggers.literals_within(texts, literals) == expected
    triggers._automaton.cache_clear()
