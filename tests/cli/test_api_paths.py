"""API paths live in one module (agent/client.py): nothing else in cli/ or agent/ builds a request by hand."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "agent" / "client.py"
TRANSPORT = ROOT / "agent" / "http.py"
# What only the client may touch: the transport and the HTTP library by name, and the client's own
# plumbing as attributes of a client (another class's own self._call or a local variable does not count).
RAW_NAMES = {"ServerConnection", "httpx"}
RAW_ATTRIBUTES = {"connection", "_call", "_client"}


def _first_segments() -> set[str]:
    from server.api import (
        accounts, agents, audit, auth, health, keys, pc_requests, restic_rest, sessions, snapshots, tickets, uploads,
    )

    paths = [r.path for m in (accounts, agents, audit, auth, health, keys, pc_requests, restic_rest, sessions, snapshots,
                              tickets, uploads) for r in m.router.routes]
    return {p.split("/")[2] for p in paths if p.startswith("/v1/")}


def _sources():
    for folder in ("cli", "agent"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path not in (CLIENT, TRANSPORT):
                yield path, ast.parse(path.read_text(), filename=str(path))


def _leading_text(node: ast.AST) -> str | None:
    """The literal start of a string or f-string node."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def test_no_literal_api_paths_outside_the_client():
    segments = _first_segments()
    assert {"tickets", "agent", "uploads", "bundles", "pair"} <= segments
    path_like = re.compile(rf"^/?(?:v1/)?(?:{'|'.join(map(re.escape, sorted(segments)))})/")
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            text = _leading_text(node)
            if text is not None and path_like.match(text):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text!r}")
    assert found == [], "build requests with agent.client.HelplineClient:\n" + "\n".join(found)


def test_only_the_client_holds_a_raw_connection():
    """Without the transport a one-word path ("tickets", "pair") cannot be sent either."""
    users = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                if node.attr in RAW_ATTRIBUTES and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                    users.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
                continue
            if isinstance(node, ast.Name | ast.alias):
                name = node.id if isinstance(node, ast.Name) else node.name
                if name in RAW_NAMES or name.split(".")[0] == "httpx":
                    users.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}: {name}")
    assert users == []
