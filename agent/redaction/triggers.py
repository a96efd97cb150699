"""Cheap tests that decide which lines a detector needs to see at all.

Running every detector over every line is slow; most log lines contain nothing any
detector could change. Each detector therefore declares its triggers: lower-case
substrings, at least one of which is in every line it could change, or (for shapes
without a fixed substring, such as IP addresses) a regex. A trigger may fire on
lines the detector then leaves alone, but must never miss one it would change.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

try:  # an Aho-Corasick automaton finds every literal in one pass, about ten times faster than the regex below
    import ahocorasick_rs
except ImportError:  # no wheel for this platform: the regex finds the same lines, more slowly
    ahocorasick_rs = None


@dataclass(frozen=True)
class Triggers:
    """Lower-case substrings and/or a regex; a line that has neither cannot be changed by the detector."""

    literals: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None


def literal_trie(literals: Sequence[str]) -> str | None:
    """One regex that finds any of ``literals``, written as a trie (``pass(?:word)?|pwd|…``); None for none.

    One search over the text finds the next line with any trigger; the regex
    engine follows the trie character by character, so a few hundred literals
    cost about what one does, where a search per literal repeats the scan each time.
    """
    if not literals:
        return None
    trie: dict[str, dict] = {}
    for literal in literals:
        node = trie
        for char in literal:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, dict]) -> str:
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


@lru_cache(maxsize=64)
def combined_literals(literals: tuple[str, ...]) -> re.Pattern[str] | None:
    """:func:`literal_trie` compiled. Not through the pattern cache: the literals may be this PC's names."""
    trie = literal_trie(literals)
    return None if trie is None else re.compile(trie)


@lru_cache(maxsize=64)
def _automaton(literals: tuple[str, ...]):
    """An automaton that finds ``literals``, or None where the regex must do (no package, an empty literal, or
    one with a line break: a match must lie within one line)."""
    if ahocorasick_rs is None or not literals or any(not lit or "\n" in lit for lit in literals):
        return None
    return ahocorasick_rs.AhoCorasick(list(literals))


#: The automaton reads text in slices of about this many characters, cut after a line break: the list of
#: matches it returns for one slice stays small. A slice that would be longer (a very long line) is searched
#: by the regex, which stops at a line's first match.
SLICE_CHARS = 1 << 14


def literal_line_starts(lowered: str, pos: int, literals: tuple[str, ...]) -> set[int]:
    """Return the start offsets of the lines of ``lowered[pos:]`` that hold any of ``literals``.

    An Aho-Corasick automaton where the package is installed, else the combined regex
    (:func:`combined_literals`); both find exactly the same lines. The automaton reports
    matches that do not overlap, but no literal spans a line break, so every line that
    holds a literal has one reported.
    """
    literals = tuple(literals)
    starts: set[int] = set()
    automaton = _automaton(literals)
    size = len(lowered)
    begin = pos
    while begin < size:
        if automaton is None:
            end = size
        else:
            cut = lowered.find("\n", min(begin + SLICE_CHARS, size - 1))
            end = size if cut == -1 else cut + 1
        if automaton is None or end - begin > 2 * SLICE_CHARS or not _automaton_starts(
                automaton, lowered, begin, end, starts):
            _regex_starts(combined_literals(literals), lowered, begin, end, starts)
        begin = end
    return starts


def literals_in(lowered: str, literals: tuple[str, ...], ascii_literals: tuple[str, ...] | None = None) -> set[str]:
    """Return which of ``literals`` occur in ``lowered`` (one line), overlapping or not.

    The automaton reports every occurrence, so a line longer than :data:`SLICE_CHARS` is
    searched for each literal in turn instead (a long line of ``$`` would give a match per
    character). ``ascii_literals`` (the ASCII ones among them) spare looking for the others
    in ASCII text, where they cannot occur.
    """
    automaton = _automaton(tuple(literals)) if len(lowered) <= SLICE_CHARS else None
    if automaton is not None:
        try:
            found = automaton.find_matches_as_indexes(lowered, overlapping=True)
        except UnicodeError:  # a lone surrogate: look for each literal instead
            pass
        else:
            return {literals[index] for index, _, _ in found}
    candidates = ascii_literals if ascii_literals is not None and lowered.isascii() else literals
    return {literal for literal in candidates if literal in lowered}


def literals_within(texts: Sequence[str], literals: tuple[str, ...]) -> list[set[str]]:
    """For each of ``texts`` (short, one line each), which of ``literals`` occur in it, overlapping or not:
    one automaton pass per text where the package is installed, else a search per literal."""
    automaton = _automaton(literals)
    if automaton is not None:
        try:
            return [{literals[index] for index, _, _ in automaton.find_matches_as_indexes(text, overlapping=True)}
                    for text in texts]
        except UnicodeError:  # a lone surrogate: look for each literal instead
            pass
    return [{literal for literal in literals if literal in text} for text in texts]


def _automaton_starts(automaton, lowered: str, begin: int, end: int, starts: set[int]) -> bool:
    """Add the starts of the lines of ``lowered[begin:end]`` (whole lines) that the automaton finds a literal in;
    False (nothing added) if it cannot read that text (a lone surrogate, from text decoded with surrogateescape)."""
    try:
        found = automaton.find_matches_as_indexes(lowered[begin:end])
    except UnicodeError:
        return False
    line_end = begin  # a match before this offset is in a line already added
    for _, first, _ in found:
        at = begin + first
        if at < line_end:
            continue
        starts.add(lowered.rfind("\n", 0, at) + 1)
        newline = lowered.find("\n", at, end)
        line_end = end if newline == -1 else newline + 1
    return True


def _regex_starts(combined: re.Pattern[str] | None, lowered: str, begin: int, end: int, starts: set[int]) -> None:
    """Add the starts of the lines of ``lowered[begin:end]`` (whole lines) where ``combined`` matches."""
    if combined is None:
        return
    # After a hit the rest of its line needs no search: the next one starts at the next line.
    found = combined.search(lowered, begin, end)
    while found is not None:
        i = found.start()
        starts.add(lowered.rfind("\n", 0, i) + 1)
        newline = lowered.find("\n", i, end)
        if newline == -1:
            break
        found = combined.search(lowered, newline + 1, end)


def line_starts(text: str, pos: int, literals: tuple[str, ...], patterns: list[re.Pattern[str]]) -> list[int] | None:
    """Return the sorted start offsets of the lines of ``text[pos:]`` where any trigger fires.

    Returns None when lower-casing changes the text's length (a few Unicode letters do),
    because offsets in the lowered text would then not point into ``text``: the caller
    must look at every line instead.
    """
    lowered = text.lower()
    if len(lowered) != len(text):
        return None
    starts = literal_line_starts(lowered, pos, tuple(literals))
    for pattern in patterns:
        m = pattern.search(text, pos)
        while m is not None:
            starts.add(text.rfind("\n", 0, m.start()) + 1)
            newline = text.find("\n", m.end())
            if newline == -1:
                break
            m = pattern.search(text, newline + 1)
    return sorted(starts)
