"""Scrub a parsed JSON document value by value, for when line-based scrubbing broke its syntax.

Line-based scrubbing keeps almost every JSON file valid (tokens never contain quotes
or backslashes). When it does not (a secret inside an escaped string, say), the
redactor scrubs the parsed document instead: every string goes through the same
detectors, and values under secret-named keys are replaced whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agent.redaction import keys
from agent.redaction.assignments import is_not_secret
from agent.redaction.tokens import Hit, token


def scrub_document(document: Any, scrub_string: Callable[[str], str], hit: Hit) -> Any:
    """Return a copy of ``document`` with every string scrubbed and secret-named values replaced."""

    def walk(node: Any, inherited: str | None) -> Any:
        if isinstance(node, dict):
            return {scrub_string(k): member(k, v, inherited) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(item, inherited) for item in node]
        scalar = isinstance(node, (str, int, float)) and not isinstance(node, bool)
        if inherited is not None and scalar and not is_not_secret(str(node)):
            hit(inherited)
            return token(inherited)
        if isinstance(node, str):
            return scrub_string(node)
        return node

    def member(key: str, value: Any, inherited: str | None) -> Any:
        kind = keys.classify_key(key)
        if kind is None:
            return walk(value, inherited)
        if isinstance(value, (dict, list)):
            return walk(value, keys.container_kind(key) or inherited)
        return walk(value, kind)

    return walk(document, None)


def dump_like(document: Any, original_text: str) -> str:
    """Serialise ``document`` in the layout of ``original_text``: indented if it spanned lines."""
    indent = 2 if "\n" in original_text.strip() else None
    text = json.dumps(document, indent=indent, ensure_ascii=False)
    return text + "\n" if original_text.endswith("\n") else text
