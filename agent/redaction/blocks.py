"""Secrets that span lines: PEM private keys, YAML block values and lists, JSON arrays.

The redactor streams line by line, so a construct that opens on one line and closes
on a later one is tracked here as an open *block*. Each block decides, for every
following line, whether the line still belongs to it (and what to emit instead) or
whether the block has ended (and the rest of the line is ordinary text again).
Blocks fail closed: a PEM key whose END line never comes swallows the rest of the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from agent.redaction import keys
from agent.redaction.assignments import LABEL_STOP, is_not_secret
from agent.redaction.tokens import Hit, is_redacted, token
from agent.regexes import rx

PRIVATE_KEY = "private-key"

# Lines that may open a block without any detector firing (PEM BEGIN, PuTTY Private-Lines);
# settings that open YAML/JSON/XML blocks contain the key-value detectors' keywords anyway.
TRIGGERS = ("begin", "private-lines", "bytes omitted here", "ugfzc3dvcmq6", "cgfzc3dvcmq6")
CUT_LINE = "cut-line"
# The line Helpline's collectors write where they left out the middle of a capped file (see
# agent.diagnostics.context.OMISSION_MARKER). When the file was one long line, the head before the
# marker ends inside that line and the tail after it starts inside it: a secret may be cut in two, and
# the tail's half has no name before it that says it is a secret.
CUT_MARKER = rx(
    r"^\[\.\.\. helpline: \d+ bytes omitted here; kept the first (?P<head>\d+) and the last (?P<tail>\d+) bytes \.\.\.\]$"
)
PEM_BEGIN = rx(r"-{4,5} ?BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK)? ?-{4,5}")
# PuTTY .ppk files: "Private-Lines: 14" followed by that many base64 lines.
PPK_PRIVATE_LINES = rx(r"^Private-Lines:[ \t]*(\d+)[ \t]*$")

_YAML_BLOCK_START = rx(
    r"^(?P<indent>[ \t]*)(?P<dash>-[ \t]+)?(?P<q>[\"']?)(?P<key>[\w.\-]+(?:[ \t][\w.\-]+){0,3})(?P=q)[ \t]*:"
    r"[ \t]*(?P<indicator>(?:!\S+[ \t]+)?[|>][-+0-9]*)?[ \t]*(?:#.*)?$"
)
_ARRAY_OPEN = rx(r"[:=][ \t]*\[(?P<rest>[^\]]*)$")
_KEY_BEFORE = rx(r"(?P<q>[\"']?)(?P<key>[\w.\-]+)(?P=q)[ \t]*$")
_LIST_ITEM = rx(r"(?P<lead>[ \t]*-[ \t]+)(?P<value>\S.*?)[ \t]*$")
_NESTED_PAIR = rx(r"(?P<lead>[ \t]*[\"']?[\w.\-]+[\"']?[ \t]*:[ \t]*)(?P<value>.*?)[ \t]*$")
# `- name: DB_PASSWORD` (also `Name:`, `key:`, `variable:`): a list item naming a setting, its value below.
# The same in JSON, one key a line: `"name": "DB_PASSWORD",` then `"value": "hunter2"`.
_NAMED_ITEM = rx(
    r"^(?P<indent>[ \t]*)(?P<dash>-[ \t]+)?(?P<kq>\"?)(?:name|key|variable|env|envvar)(?P=kq)[ \t]*:[ \t]*"
    r"(?P<q>[\"']?)(?P<named>[\w.\-]+)(?P=q)[ \t]*,?[ \t]*(?:#.*)?$",
    re.IGNORECASE,
)
_ITEM_VALUE = rx(
    r"(?P<lead>[ \t]*(?P<kq>\"?)value(?P=kq)[ \t]*:[ \t]*)(?P<value>\S.*?)(?P<comma>,?)[ \t]*", re.IGNORECASE
)
#: How many lines after the name a value is looked for (an item's other keys may stand between).
NAMED_VALUE_LINES = 6
_XML_OPEN_ALONE = rx(r"^[ \t]*<(?P<tag>[\w:.\-]+)(?:[ \t][^<>]*)?>[ \t]*$")
_XML_TEXT = rx(r"(?<=>)(?P<text>[^<>]*[^<>\s][^<>]*)(?=<)|^(?P<bare>[ \t]*[^<>\s][^<>]*?)[ \t]*$")
_JSON_SCALAR = rx(r"\"(?:[^\"\\]|\\.)*\"|(?<![\w.\-])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")


@dataclass
class BlockStep:
    """What a block does with one line: ``out`` replaces the line (None drops it); when ``done``,
    ``rest`` (if any) is the remainder of the line to scrub as ordinary text."""

    out: str | None
    done: bool = False
    rest: str | None = None


class Block(Protocol):
    """An open multi-line secret; ``feed`` receives each following line (without its ending)."""

    def feed(self, body: str, hit: Hit) -> BlockStep: ...


def _indent(body: str) -> int:
    return len(body) - len(body.lstrip(" \t"))


class PemBlock:
    """Inside ``-----BEGIN ... PRIVATE KEY-----``: drop every line up to and including the END marker."""

    def __init__(self, begin: re.Match[str]) -> None:
        kind = re.escape(begin.group(1) or "")
        suffix = re.escape(begin.group(2) or "")
        self._end = re.compile(rf"-{{4,5}} ?END {kind}PRIVATE KEY{suffix} ?-{{4,5}}")

    def feed(self, body: str, hit: Hit) -> BlockStep:
        end = self._end.search(body)
        if end is None:
            return BlockStep(None)
        return BlockStep(None, done=True, rest=body[end.end() :] or None)


class CountedLinesBlock:
    """A fixed number of following lines are secret (PuTTY ``Private-Lines: N``): one token replaces them."""

    def __init__(self, remaining: int) -> None:
        self._remaining = remaining
        self._emitted = False

    def feed(self, body: str, hit: Hit) -> BlockStep:
        if is_redacted(body):
            return BlockStep(body, done=True)  # scrubbed before: the token stands for all the lines
        self._remaining -= 1
        if self._emitted:
            return BlockStep(None, done=self._remaining <= 0)
        self._emitted = True
        hit(PRIVATE_KEY)
        return BlockStep(token(PRIVATE_KEY), done=self._remaining <= 0)


class YamlScalarBlock:
    """``password: |`` (or ``>``, ``!vault |``): the indented lines that follow are the value."""

    def __init__(self, indent: int, kind: str) -> None:
        self._indent = indent
        self._kind = kind
        self._emitted = False

    def feed(self, body: str, hit: Hit) -> BlockStep:
        if not body.strip():
            return BlockStep(body)
        if _indent(body) <= self._indent:
            return BlockStep(None, done=True, rest=body)
        if is_redacted(body):
            self._emitted = True
            return BlockStep(body)
        if self._emitted:
            return BlockStep(None)
        self._emitted = True
        hit(self._kind)
        return BlockStep(body[: _indent(body)] + token(self._kind))


class YamlNestedBlock:
    """``passwords:`` with nothing after it: every list item or nested value below is secret too."""

    def __init__(self, indent: int, kind: str) -> None:
        self._indent = indent
        self._kind = kind

    def feed(self, body: str, hit: Hit) -> BlockStep:
        if not body.strip():
            return BlockStep(body)
        indent = _indent(body)
        # YAML allows a list at the same indentation as its key.
        same_level_item = indent == self._indent and body.lstrip().startswith("- ")
        if indent <= self._indent and not same_level_item:
            return BlockStep(None, done=True, rest=body)
        for pattern in (_LIST_ITEM, _NESTED_PAIR):
            m = pattern.fullmatch(body)
            if m and pattern is _NESTED_PAIR and not m.group("value"):
                return BlockStep(body)  # a nested mapping key: its values follow
            if m:
                if is_not_secret(m.group("value")):
                    return BlockStep(body)
                hit(self._kind)
                return BlockStep(m.group("lead") + token(self._kind))
        if is_redacted(body):
            return BlockStep(body)
        hit(self._kind)
        return BlockStep(body[:indent] + token(self._kind))


class NamedValueBlock:
    """A list item that names a secret and gives its value on another line, as Kubernetes, Compose, ECS and
    GitHub Actions write environment variables::

        - name: DB_PASSWORD
          value: hunter2

    The item's ``value`` key (at the item's own indentation) is secret. The block ends with the item: at a line
    less indented, at the next item, after the value, or after :data:`NAMED_VALUE_LINES` lines.
    """

    def __init__(self, indent: int, kind: str) -> None:
        self._indent = indent  # the indentation of the item's keys (after "- ")
        self._kind = kind
        self._left = NAMED_VALUE_LINES

    def feed(self, body: str, hit: Hit) -> BlockStep:
        if not body.strip():
            return BlockStep(body)
        indent = _indent(body)
        self._left -= 1
        if indent < self._indent or self._left < 0:
            return BlockStep(None, done=True, rest=body)
        m = _ITEM_VALUE.fullmatch(body) if indent == self._indent else None
        if m is None:
            return BlockStep(body)
        value = m.group("value")
        if is_not_secret(value.strip("\"'")) or is_redacted(value):
            return BlockStep(body, done=True)
        hit(self._kind)
        quote = value[0] if value[0] in "\"'" else ""
        return BlockStep(m.group("lead") + quote + token(self._kind) + quote + m.group("comma"), done=True)


# YAML's explicit key: "? db password" on one line, ": value" on the next (at the same indentation).
_EXPLICIT_KEY = rx(r"^(?P<indent>[ \t]*)\?[ \t]+(?P<q>[\"']?)(?P<key>[^\"'#\n]*?)(?P=q)[ \t]*(?:#.*)?$")
_EXPLICIT_VALUE = rx(r"^(?P<lead>[ \t]*:[ \t]+)(?P<value>\S.*?)(?P<trail>(?:[ \t]+#.*)?[ \t]*)$")


class ExplicitKeyBlock:
    """A YAML mapping entry written with an explicit key, whose value is on the next line::

        ? db password
        : hunter2

    The next line's value is secret if it starts with ": " at the key's indentation; any other line ends the
    block and is read as ordinary text.
    """

    def __init__(self, indent: int, kind: str) -> None:
        self._indent = indent
        self._kind = kind

    def feed(self, body: str, hit: Hit) -> BlockStep:
        m = _EXPLICIT_VALUE.fullmatch(body)
        if m is None or _indent(body) != self._indent:
            return BlockStep(None, done=True, rest=body)
        value = m.group("value")
        if is_not_secret(value.strip("\"'")) or is_redacted(value.strip("\"'")):
            return BlockStep(body, done=True)
        hit(self._kind)
        quote = value[0] if value[0] in "\"'" and value[-1] == value[0] and len(value) > 1 else ""
        return BlockStep(m.group("lead") + quote + token(self._kind) + quote + m.group("trail"), done=True)


# SMTP AUTH LOGIN in a mail program's debug log: the server asks "334 UGFzc3dvcmQ6" (base64 of "Password:"), and
# the client's next line ("C: …", ">>> …" or the bare answer) is the password in base64.
_SMTP_PASSWORD_PROMPT = rx(r"(?<![\w+/=])334[ \t]+(?:UGFzc3dvcmQ6|cGFzc3dvcmQ6)(?![\w+/=])")
_BASE64_ANSWER = rx(r"(?<![\w+/=])(?P<value>[A-Za-z0-9+/]{4,}={0,2})[ \t]*$")
_SMTP_REPLY = rx(r"(?<![\w.:])[2-5]\d\d[ -]")  # the server's next reply ("535 5.7.8 failed"), not an answer
#: How many lines after the prompt the answer is looked for (a blank line or a log's own line may come between).
ANSWER_LINES = 3


class NextLineAnswerBlock:
    """A prompt whose answer, the next line's last word, is secret: SMTP's ``334 UGFzc3dvcmQ6``."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._left = ANSWER_LINES

    def feed(self, body: str, hit: Hit) -> BlockStep:
        self._left -= 1
        if not body.strip():
            return BlockStep(body, done=self._left <= 0)
        m = _BASE64_ANSWER.search(body)
        if m is None or is_redacted(m.group("value")) or _SMTP_REPLY.search(body):
            return BlockStep(None, done=True, rest=body)
        hit(self._kind)
        return BlockStep(body[: m.start("value")] + token(self._kind), done=True)


# macOS `security find-generic-password -w …` (or -wa, -ws, and find-internet-password) prints the password alone on
# the next line of a terminal transcript.
_KEYCHAIN_PRINT = rx(r"\bsecurity[ \t]+find-(?:generic|internet)-password\b[^\n|;&>]*?[ \t]-[a-zA-Z]*w[a-zA-Z]*\b")
_SHELL_OR_ERROR = rx(r"^(?:[^\s]*[$#%>][ \t]|security: |[A-Za-z]+:[ \t]|\S+@\S+[ \t~:])")


class KeychainOutputBlock:
    """The password that ``security find-generic-password -w`` printed: the next line that is not blank, unless it
    is a prompt or an error (``security: … could not be found``)."""

    def __init__(self) -> None:
        self._left = ANSWER_LINES

    def feed(self, body: str, hit: Hit) -> BlockStep:
        self._left -= 1
        if not body.strip():
            return BlockStep(body, done=self._left <= 0)
        value = body.strip()
        if _SHELL_OR_ERROR.match(value) or is_redacted(value) or (" " in value and len(value) > 64):
            return BlockStep(None, done=True, rest=body)
        hit(keys.PASSWORD)
        start = body.index(value[0])
        return BlockStep(body[:start] + token(keys.PASSWORD), done=True)


class JsonArrayBlock:
    """``"api_keys": [`` left open: every string and number up to the matching ``]`` is secret."""

    def __init__(self, depth: int, kind: str) -> None:
        self._depth = depth
        self._kind = kind

    def feed(self, body: str, hit: Hit) -> BlockStep:
        close = self._closing_index(body)
        head, rest = (body, None) if close is None else (body[:close], body[close:])

        def replace(m: re.Match[str]) -> str:
            if is_not_secret(m.group(0).strip('"')):
                return m.group(0)
            hit(self._kind)
            return f'"{token(self._kind)}"'

        out = _JSON_SCALAR.sub(replace, head)
        if close is None:
            return BlockStep(out)
        return BlockStep(out, done=True, rest=rest)

    def _closing_index(self, body: str) -> int | None:
        in_string = False
        i = 0
        while i < len(body):
            c = body[i]
            if in_string:
                if c == "\\":
                    i += 1
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
            elif c == "[":
                self._depth += 1
            elif c == "]":
                self._depth -= 1
                if self._depth == 0:
                    return i
            i += 1
        return None


class XmlElementBlock:
    """``<AdministratorPassword>`` alone on a line: every text node up to the closing tag is secret."""

    def __init__(self, tag: str, kind: str) -> None:
        self._close = re.compile(rf"</{re.escape(tag)}\s*>")
        self._kind = kind

    def feed(self, body: str, hit: Hit) -> BlockStep:
        close = self._close.search(body)
        head, rest = (body, None) if close is None else (body[: close.start()], body[close.start() :])

        def replace(m: re.Match[str]) -> str:
            text = m.group("text") if m.group("text") is not None else m.group("bare")
            if is_not_secret(text):
                return m.group(0)
            hit(self._kind)
            return token(self._kind) if m.group("text") is not None else text[: _indent(text)] + token(self._kind)

        out = _XML_TEXT.sub(replace, head)
        return BlockStep(out, done=close is not None, rest=rest)


class CutTailBlock:
    """The line after an omission marker: if it is the whole kept tail, it starts in the middle of a line
    (maybe of a secret, without the name that announced it), so it is replaced whole."""

    def __init__(self, tail_bytes: int) -> None:
        self._tail_bytes = tail_bytes

    def feed(self, body: str, hit: Hit) -> BlockStep:
        # The tail was cut on bytes; its text in UTF-8 is at least as long (cp1252 text only grows).
        if is_redacted(body) or len(body.encode("utf-8", "replace")) + 1 < self._tail_bytes:
            return BlockStep(None, done=True, rest=body)  # a whole line: scrub it as usual
        hit(CUT_LINE)
        return BlockStep(token(CUT_LINE), done=True)


def cut_head_bytes(line: str) -> int | None:
    """Return the head size an omission-marker line states, or None if ``line`` is not one."""
    m = CUT_MARKER.match(line.rstrip("\r\n"))
    return int(m.group("head")) if m else None


def block_opened_by(body: str) -> Block | None:
    """Return the block a line opens as a setting whose value continues on the next lines, if any.

    PEM blocks are not opened here: the scrubber opens them where the BEGIN marker is.
    """
    m = _YAML_BLOCK_START.match(body)
    if m:
        # A key with spaces ("db password: |") opens only a scalar: "Password rules:" over a list is prose.
        spaced = any(c in m.group("key") for c in " \t")
        kind = keys.container_kind(m.group("key")) if m.group("indicator") or not spaced else None
        if kind is not None:
            indent = len(m.group("indent")) + len(m.group("dash") or "")
            if m.group("indicator"):
                return YamlScalarBlock(indent, kind)
            return YamlNestedBlock(indent, kind)
    explicit = _EXPLICIT_KEY.match(body) if "?" in body else None
    words = explicit.group("key").split() if explicit else []
    if explicit and len(words) <= 4 and not any(word.lower() in LABEL_STOP for word in words):
        kind = keys.classify_key(explicit.group("key").strip())  # a name, not a question ("? what is the password")
        if kind is not None:
            return ExplicitKeyBlock(len(explicit.group("indent")), kind)
    named_item = _NAMED_ITEM.match(body) if ":" in body else None
    if named_item:
        kind = keys.classify_key(named_item.group("named"))
        if kind is not None:
            return NamedValueBlock(len(named_item.group("indent")) + len(named_item.group("dash") or ""), kind)
    opening = _ARRAY_OPEN.search(body) if "[" in body else None
    named = _KEY_BEFORE.search(body, 0, opening.start()) if opening else None
    if opening and named:
        kind = keys.container_kind(named.group("key"))
        if kind is not None:
            rest = opening.group("rest")
            return JsonArrayBlock(1 + rest.count("[") - rest.count("]"), kind)
    m = _XML_OPEN_ALONE.match(body)
    if m:
        kind = keys.container_kind(m.group("tag"))
        if kind is not None:
            return XmlElementBlock(m.group("tag"), kind)
    cut = CUT_MARKER.match(body) if body.startswith("[... helpline: ") else None
    if cut:
        return CutTailBlock(int(cut.group("tail")))
    ppk = PPK_PRIVATE_LINES.match(body)
    if ppk and int(ppk.group(1)) > 0:
        return CountedLinesBlock(int(ppk.group(1)))
    if "334" in body and _SMTP_PASSWORD_PROMPT.search(body):
        return NextLineAnswerBlock(keys.PASSWORD)
    if "find-" in body and _KEYCHAIN_PRINT.search(body):
        return KeychainOutputBlock()
    return None
