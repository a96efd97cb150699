"""Scrub one stream of text with a detector pipeline, chunk by chunk, carrying multi-line state.

Most lines of a log contain nothing any detector could act on; the pipeline's
triggers find the lines that might, and everything between them is copied
unchanged. Lines inside an open block (a PEM key, a YAML secret) are handled one by
one until the block closes.
"""

from __future__ import annotations

from collections import Counter

from agent.redaction import blocks
from agent.redaction.detectors import Pipeline
from agent.redaction.tokens import is_redacted, token
from agent.regexes import rx

_LAST_WORD = rx(r"\S+$")


def split_eol(line: str) -> tuple[str, str]:
    """Split a line into its text and its line ending (``\\r\\n``, ``\\n``, ``\\r`` or nothing)."""
    if line.endswith("\r\n"):
        return line[:-2], "\r\n"
    if line.endswith(("\n", "\r")):
        return line[:-1], line[-1]
    return line, ""


class Scrubber:
    """Feed text through :meth:`scrub` in pieces that end at line boundaries; read :attr:`counts` at the end."""

    def __init__(self, pipeline: Pipeline, *, counts: Counter[str] | None = None, record_lines: bool = False) -> None:
        self.pipeline = pipeline
        self.counts: Counter[str] = Counter() if counts is None else counts
        # (line number, detector) for every replacement; verification reports these.
        self.hits: list[tuple[int, str]] | None = [] if record_lines else None
        self.line_no = 0
        self._block: blocks.Block | None = None

    def _hit(self, name: str) -> None:
        self.counts[name] += 1
        if self.hits is not None:
            self.hits.append((self.line_no, name))

    def scrub(self, text: str) -> str:
        """Return ``text`` scrubbed; ``text`` must end at a line boundary unless it is the end of input."""
        out: list[str] = []
        pos = 0
        size = len(text)
        starts: list[int] | None = None
        index = 0
        version = -1
        if self.line_no == 0 and self._block is None:
            first = self._cut_first_line(text)
            if first:
                out.append(first[1])
                pos = first[0]
        while pos < size:
            if self._block is None:
                if version != self.pipeline.triggers_version:
                    # A newly learned name may occur in lines not selected so far: select again.
                    version = self.pipeline.triggers_version
                    starts, index = self.pipeline.line_starts(text, pos), 0
                if starts is not None:
                    while index < len(starts) and starts[index] < pos:
                        index += 1
                    if index == len(starts):
                        out.append(text[pos:])
                        self.line_no += text.count("\n", pos)
                        break
                    if starts[index] > pos:
                        out.append(text[pos : starts[index]])
                        self.line_no += text.count("\n", pos, starts[index])
                        pos = starts[index]
            newline = text.find("\n", pos)
            end = size if newline == -1 else newline + 1
            out.append(self.scrub_line(text[pos:end]))
            pos = end
        return "".join(out)

    def _cut_first_line(self, text: str) -> tuple[int, str] | None:
        """A file whose first line is followed by an omission marker stating a head of that line's size was
        cut inside that line: scrub it, then replace its last word, which may be the first half of a secret
        too short to be recognised. Return (end of the line, scrubbed line) or None."""
        end = text.find("\n")
        if end == -1:
            return None
        marker_end = text.find("\n", end + 1)
        head = blocks.cut_head_bytes(text[end + 1 : marker_end if marker_end != -1 else len(text)])
        body, eol = split_eol(text[: end + 1])
        if head is None or len(body.encode("utf-8", "replace")) + 1 < head:
            return None
        self.line_no += 1
        scrubbed = self._scrub_body(body)
        last = _LAST_WORD.search(scrubbed)
        if last and not is_redacted(last.group(0)):
            scrubbed = scrubbed[: last.start()] + token(blocks.CUT_LINE)
            self._hit(blocks.CUT_LINE)
        return end + 1, scrubbed + eol

    def scrub_line(self, line: str) -> str:
        """Return one line (with its ending) scrubbed; an empty string if the line is dropped."""
        body, eol = split_eol(line)
        self.line_no += 1
        prefix = ""
        if self._block is not None:
            step = self._block.feed(body, self._hit)
            # What a block keeps of a line still goes through the detectors: a block only knows
            # its own secret, not a token that happens to stand next to it.
            kept = "" if step.out is None else self.pipeline.apply(step.out, self._hit)
            if not step.done or step.rest is None:
                if step.done:
                    self._block = None
                return kept + eol if step.out is not None else ""
            self._block = None
            prefix = kept
            body = step.rest
        return prefix + self._scrub_body(body) + eol

    def _scrub_body(self, body: str) -> str:
        for begin in blocks.PEM_BEGIN.finditer(body) if "BEGIN" in body else ():
            pem = blocks.PemBlock(begin)
            if pem.feed(body[begin.end() :], self._hit).done:
                continue  # BEGIN and END on one line: the pipeline's one-line detector removes it
            self._block = pem
            self._hit(blocks.PRIVATE_KEY)
            # The text before the key is scrubbed together with the token, exactly as a second
            # pass over the output will see it.
            return self.pipeline.apply(body[: begin.start()] + token(blocks.PRIVATE_KEY), self._hit)
        opened = blocks.block_opened_by(body)
        body = self.pipeline.apply(body, self._hit)
        if opened is not None:
            self._block = opened
        return body
