"""Cheap tests that decide which lines a detector needs to see at all.

Running every detector over every line is slow; most log lines contain nothing any
detector could change. Each detector therefore declares its triggers: lower-case
substrings, at least one of which is in every line it could change, or (for shapes
without a fixed substring, such as IP addresses) a regex. A trigger may fire on
lines the detector then leaves alone, but must never miss one it would change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Triggers:
    """Lower-case substrings and/or a regex; a line that has neither cannot be changed by the detector."""

    literals: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None


@lru_cache(maxsize=64)
def combined_literals(literals: tuple[str, ...]) -> re.Pattern[str] | None:
    """One compiled pattern that finds any of ``literals``, written as a trie (``pass(?:word)?|pwd|…``).

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

    return re.compile(build(trie))


def line_starts(text: str, pos: int, literals: tuple[str, ...], patterns: list[re.Pattern[str]]) -> list[int] | None:
    """Return the sorted start offsets of the lines of ``text[pos:]`` where any trigger fires.

    Returns None when lower-casing changes the text's length (a few Unicode letters do),
    because offsets in the lowered text would then not point into ``text``: the caller
    must look at every line instead.
    """
    lowered = text.lower()
    if len(lowered) != len(text):
        return None
    starts: set[int] = set()
    combined = combined_literals(tuple(literals))
    if combined is not None:
        # After a hit the rest of its line needs no search: the next one starts at the next line.
        search = combined.search
        found = search(lowered, pos)
        while found is not None:
            i = found.start()
            starts.add(lowered.rfind("\n", 0, i) + 1)
            newline = lowered.find("\n", i)
            if newline == -1:
                break
            found = search(lowered, newline + 1)
    for pattern in patterns:
        m = pattern.search(text, pos)
        while m is not None:
            starts.add(text.rfind("\n", 0, m.start()) + 1)
            newline = text.find("\n", m.end())
            if newline == -1:
                break
            m = pattern.search(text, newline + 1)
    return sorted(starts)
