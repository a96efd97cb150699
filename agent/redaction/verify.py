"""Re-scan the final files before anything leaves the PC.

Verification runs the same detectors over the output, on a copy of the pseudonym
map (so it records nothing), searches for every original value the map holds (an
address or user name that was pseudonymised in one place must not appear in clear
in another), and takes a second look of its own (:mod:`agent.redaction.second_look`:
separate heuristics, so a secret the detectors do not know is still caught). Anything it cannot read as text, and any link or special file,
is a finding too: what cannot be checked cannot be vouched for.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path

from agent.redaction import blocks, second_look, tree
from agent.redaction.detectors import Pipeline
from agent.redaction.identities import MIN_LEARNED_USERNAME, word_boundary_pattern
from agent.redaction.outcomes import Finding
from agent.redaction.pseudonyms import EMAIL, HOSTNAME, IPV4, IPV6, KINDS, MAC, USERNAME, PseudonymMap
from agent.redaction.scrubber import Scrubber
from agent.redaction.textfiles import NotText, read_text_chunks

SYMLINK = "symlink"
SPECIAL_FILE = "special-file"
UNSCANNABLE = "unscannable"
#: Prefix of the second look's finding names (``second-look-keyword-value``).
SECOND_LOOK = "second-look-"


#: Up to this many originals are looked for by plain search before the pattern runs.
_MAX_NEEDLES = 64


def _alternatives(values: Iterable[str]) -> str:
    return "|".join(re.escape(v) for v in sorted(set(values), key=len, reverse=True))


class LeakScanner:
    """Finds original values recorded in a pseudonym map that still appear in text."""

    def __init__(
        self, pseudonyms: PseudonymMap, known_usernames: Iterable[str] = (), kinds: Iterable[str] = KINDS
    ) -> None:
        known = set(known_usernames)
        wanted = set(kinds)
        groups: list[str] = []

        def spellings(kind: str) -> frozenset[str]:
            return pseudonyms.spellings(kind) if kind in wanted else frozenset()

        ipv4 = spellings(IPV4)
        every = [*ipv4, *spellings(IPV6), *spellings(MAC), *spellings(EMAIL), *spellings(HOSTNAME), *spellings(USERNAME)]
        every += [m.replace(":", "-") for m in spellings(MAC)] + [m.replace("-", ":") for m in spellings(MAC)]
        # An original can only match where its letters stand: in ASCII text, ASCII originals are found by a
        # plain search of the lower-cased text, far faster than the pattern's look-arounds (which then confirm).
        needles = sorted({value.lower() for value in every if value})
        self._needles = tuple(needles) if len(needles) <= _MAX_NEEDLES and all(n.isascii() for n in needles) else None
        if ipv4:
            groups.append(rf"(?P<{IPV4}>(?<![\w.\-])(?:{_alternatives(ipv4)})(?![\w\-]|\.\d))")
        ipv6 = spellings(IPV6)
        if ipv6:
            groups.append(rf"(?P<{IPV6}>(?i:(?<![\w:.])(?:{_alternatives(ipv6)})(?![\w:])))")
        macs = spellings(MAC)
        if macs:
            both = set(macs) | {m.replace(":", "-") for m in macs} | {m.replace("-", ":") for m in macs}
            groups.append(rf"(?P<{MAC}>(?i:(?<![\w:.\-])(?:{_alternatives(both)})(?![\w:\-])))")
        emails = spellings(EMAIL)
        if emails:
            groups.append(rf"(?P<{EMAIL}>(?i:(?<![\w.%+\-])(?:{_alternatives(emails)})(?![\w\-]|\.\w)))")
        hosts = word_boundary_pattern(spellings(HOSTNAME), ignore_case=True)
        if hosts is not None:
            groups.append(rf"(?P<{HOSTNAME}>(?i:{hosts.pattern}))")
        users = word_boundary_pattern(
            (u for u in spellings(USERNAME) if u in known or len(u) >= MIN_LEARNED_USERNAME),
            ignore_case=False,
        )
        if users is not None:
            groups.append(rf"(?P<{USERNAME}>{users.pattern})")
        self.pattern = re.compile("|".join(groups)) if groups else None

    def _absent(self, text: str) -> bool:
        """True if no original can be in ``text`` (ASCII text without any of them, in any case)."""
        if self._needles is None or not text.isascii():
            return False
        lowered = text.lower()
        return not any(needle in lowered for needle in self._needles)

    def scan(self, text: str) -> list[tuple[int, str]]:
        """Return ``(offset, kind)`` for every leaked original in ``text``."""
        if self.pattern is None or self._absent(text):
            return []
        return [(m.start(), m.lastgroup or "") for m in self.pattern.finditer(text)]

    def file_has_leak(self, path: Path) -> bool:
        """Return True if the (text) file at ``path`` contains any recorded original."""
        if self.pattern is None:
            return False
        with open(path, "rb") as raw:
            _, pieces = read_text_chunks(raw)
            with closing(pieces):
                return any(not self._absent(piece) and self.pattern.search(piece) for piece in pieces)


#: Files up to this size are read whole to be matched with what was checked before (larger ones are streamed).
CHECKED_SIZE_LIMIT = 8 << 20


class CheckedContents:
    """What the final check's own detectors found in file contents it read before the bundle was complete.

    A file's findings are its detectors' hits, its second look's and the originals
    the pseudonym map holds. The first two depend on nothing but the bytes when no
    detector depends on what the map has learned (no pseudonymised user names, host
    names or addresses: :meth:`Redactor.check_early` decides), so the check may read a
    file as soon as it is scrubbed and, if the same bytes are there at the end, use
    what it found then. The originals are always searched for at the end, with the
    map as it is then. Keyed by the SHA-256 of the file's bytes.
    """

    def __init__(self) -> None:
        self._found: dict[str, list[tuple[int, str]]] = {}

    def check(self, path: Path, make_pipeline: Callable[[PseudonymMap], Pipeline], pseudonyms: PseudonymMap,
              *, unchanged_from: Path | None = None) -> None:
        """Read ``path`` now and remember its detectors' and second look's findings (unreadable or large files:
        nothing; the final check reads them then).

        ``unchanged_from`` is the file ``path`` was scrubbed from when that pass replaced nothing. If
        its bytes are exactly these, the detectors have already read exactly this text and changed
        nothing: they find nothing in it (the same detectors, the same text, no pseudonym learned),
        and only the second look reads it again. Any other bytes get both.
        """
        try:
            if path.stat().st_size > CHECKED_SIZE_LIMIT:
                return
            data = path.read_bytes()
            if unchanged_from is not None and _same_bytes(unchanged_from, data):
                self._found[_digest(data)] = _scan_pieces(_decoded(data), None, None, look_again=True)
                return
            self._found[_digest(data)] = _scan_pieces(_decoded(data), make_pipeline(pseudonyms.copy()), None)
        except (NotText, UnicodeDecodeError, OSError):
            return

    def found(self, data: bytes) -> list[tuple[int, str]] | None:
        """The findings remembered for exactly these bytes, or None if they were never read."""
        return self._found.get(_digest(data))

    def __len__(self) -> int:
        return len(self._found)


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _decoded(data: bytes) -> Iterable[str]:
    _, pieces = read_text_chunks(io.BytesIO(data))
    return pieces


def verify_tree(
    root: Path,
    make_pipeline: Callable[[PseudonymMap], Pipeline],
    pseudonyms: PseudonymMap,
    known_usernames: Iterable[str] = (),
    checked: CheckedContents | None = None,
) -> list[Finding]:
    """Return every finding in the files under ``root``; an empty list means the tree is clean.

    ``checked`` holds findings for contents read earlier (see :class:`CheckedContents`);
    a file with the same bytes is searched only for the originals the map holds now.
    """
    leaks = LeakScanner(pseudonyms, known_usernames)
    pipeline = make_pipeline(pseudonyms.copy())
    findings: dict[tuple[str, int, str], Finding] = {}

    def add(path: str, line: int, detector: str) -> None:
        findings.setdefault((path, line, detector), Finding(path, line, detector))

    for entry in tree.walk(Path(root)):
        if entry.kind == tree.SYMLINK:
            add(entry.relpath, 0, SYMLINK)
        elif entry.kind == tree.SPECIAL:
            add(entry.relpath, 0, SPECIAL_FILE)
        elif entry.kind == tree.UNREADABLE:
            add(entry.relpath, 0, UNSCANNABLE)
        else:
            try:
                for line, detector in _scan_file(entry.path, pipeline, leaks, checked):
                    add(entry.relpath, line, detector)
            except (NotText, UnicodeDecodeError, OSError):
                add(entry.relpath, 0, UNSCANNABLE)
    return list(findings.values())


def scan_text(text: str, pipeline: Pipeline, leaks: LeakScanner) -> list[tuple[int, str]]:
    """Return ``(line, detector)`` for every detector match and leaked original in ``text``, as if it were a file."""
    return _scan_pieces([text if text.endswith("\n") else text + "\n"], pipeline, leaks)


def _one_line_alone(text: str) -> bool:
    """Whether ``text`` is one line that is scanned as line of a longer text exactly as on its own: no line
    break, no block it could open for the lines after it, and lower-casing keeps its length."""
    return ("\n" not in text and "\r" not in text and "BEGIN" not in text
            and len(text.lower()) == len(text) and blocks.block_opened_by(text) is None)


def scan_texts(texts: Iterable[str], pipeline: Pipeline, leaks: LeakScanner) -> list[list[str]]:
    """Return the detectors of :func:`scan_text` for each of ``texts``, in order, scanning them as one text
    where that finds exactly what scanning each on its own does.

    The final check judges many short values (a document's strings, file paths) each on its own;
    one search over them all costs far less than a search per value. A run of one-line texts
    (:func:`_one_line_alone`) is scanned as the lines of one text, after an empty first line (the
    first line of a text is where an omission marker's cut is looked for); the scrubber's state
    between lines is then what a fresh one starts with, and the pipeline is shared in the same
    order as before. Any other text is scanned on its own.
    """
    texts = list(texts)
    found: list[list[str]] = [[] for _ in texts]
    run: list[int] = []

    def scan_run() -> None:
        if not run:
            return
        joined = "\n" + "\n".join(texts[i] for i in run) + "\n"
        for line, detector in _scan_pieces([joined], pipeline, leaks):
            # A finding on no text's line cannot happen; were it to, every text of the run is flagged.
            for index in [run[line - 2]] if 2 <= line <= len(run) + 1 else run:
                found[index].append(detector)
        run.clear()

    for index, text in enumerate(texts):
        if _one_line_alone(text):
            run.append(index)
            continue
        scan_run()
        found[index] = [detector for _, detector in scan_text(text, pipeline, leaks)]
    scan_run()
    return found


def _scan_file(path: Path, pipeline: Pipeline, leaks: LeakScanner,
               checked: CheckedContents | None = None) -> list[tuple[int, str]]:
    """Return ``(line, detector)`` for every detector match and leaked original in one file."""
    if checked is not None and len(checked) and path.stat().st_size <= CHECKED_SIZE_LIMIT:
        data = path.read_bytes()
        earlier = checked.found(data)
        if earlier is not None:
            return [*earlier, *_scan_pieces(_decoded(data), None, leaks)]
        return _scan_pieces(_decoded(data), pipeline, leaks)
    with open(path, "rb") as raw:
        _, pieces = read_text_chunks(raw)
        return _scan_pieces(pieces, pipeline, leaks)


def _scan_pieces(pieces: Iterable[str], pipeline: Pipeline | None, leaks: LeakScanner | None, *,
                 look_again: bool | None = None) -> list[tuple[int, str]]:
    """The findings of the detectors (unless ``pipeline`` is None), of the second look (``look_again``; by
    default with the detectors) and of ``leaks`` (unless None)."""
    if look_again is None:
        look_again = pipeline is not None
    scrubber = Scrubber(pipeline, record_lines=True) if pipeline is not None else None
    found: list[tuple[int, str]] = []
    lines_before = 0
    for piece in pieces:
        if scrubber is not None:
            scrubber.scrub(piece)
        if leaks is not None:
            counted_to, line = 0, lines_before + 1
            for offset, kind in leaks.scan(piece):
                line += piece.count("\n", counted_to, offset)
                counted_to = offset
                found.append((line, kind))
        if look_again:
            found.extend((lines_before + line_no, SECOND_LOOK + kind)
                         for line_no, kind in second_look.scan_text(piece))
        lines_before += piece.count("\n")
    hits = (scrubber.hits or []) if scrubber is not None else []
    return [*hits, *found]


def kinds_checked(pipeline: Pipeline) -> int:
    """How many kinds of secret the final check looks for: the detectors' and the second look's."""
    return len(pipeline.names) + len(second_look.KINDS)
