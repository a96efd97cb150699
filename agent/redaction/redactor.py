"""The redactor: scrub collected files into the bundle directory, failing closed.

Every file under the staging directory ends up in exactly one state: *scrubbed*
(the output exists and every line went through the detectors), *dropped* (examined
and refused: binary, a link, a special file, or an error while scrubbing; no output)
or *not_scrubbed* (could not be read at all; no output). Nothing is skipped silently
and nothing is ever copied unscrubbed.
"""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO

from agent.redaction import jsondoc, tree
from agent.redaction.detectors import Pipeline, build_pipeline
from agent.redaction.options import RedactionOptions
from agent.redaction.outcomes import DROPPED, NOT_SCRUBBED, SCRUBBED, FileRedaction, Finding
from agent.redaction.pseudonyms import USERNAME, PseudonymMap
from agent.redaction.scrubber import Scrubber
from agent.redaction.textfiles import NotText, atomic_text_writer, read_text_chunks, read_whole_text
from agent.redaction.verify import CheckedContents, LeakScanner, kinds_checked, scan_texts, verify_tree

# JSON outputs up to this size are parsed to prove they are still valid JSON (larger ones would
# have to be loaded whole, which the streaming design avoids; collected facts are far smaller).
JSON_CHECK_LIMIT = 16 << 20
# Rounds of re-scrubbing files written before a user name was learned elsewhere.
_RESCRUB_ROUNDS = 3


class Redactor:
    """Scrubs text, files and trees with one consistent pseudonym map (:attr:`pseudonyms`, kept local)."""

    def __init__(self, options: RedactionOptions = RedactionOptions()) -> None:
        self.options = options
        self.pseudonyms = PseudonymMap()
        self._pipeline = build_pipeline(options, self.pseudonyms)
        self._checked = CheckedContents()

    def _make_pipeline(self, pseudonyms: PseudonymMap) -> Pipeline:
        return build_pipeline(self.options, pseudonyms)

    def redact_text(self, text: str) -> tuple[str, dict[str, int]]:
        """Return ``text`` scrubbed and the number of replacements per detector."""
        learned = self._learned_usernames()
        scrubber = Scrubber(self._pipeline)
        out = scrubber.scrub(text)
        if self._learned_usernames() != learned:
            # A user name learned on a later line must also go from the earlier ones.
            scrubber = Scrubber(self._pipeline)
            out = scrubber.scrub(text)
        return out, dict(scrubber.counts)

    def redact_document(self, document: Any) -> tuple[Any, dict[str, int]]:
        """Return a JSON-able ``document`` redacted, and the number of replacements per detector.

        The document is scrubbed as its indented JSON text, the way a JSON file is,
        so ``"password": "x"`` pairs are seen. If that breaks its syntax (a secret
        inside an escaped string), the parsed document is scrubbed value by value
        instead and values under secret-named keys are replaced whole: the result is
        always the same shape of JSON, with nothing left out.
        """
        text = json.dumps(document, indent=2, ensure_ascii=False)
        scrubbed, counts = self.redact_text(text)
        try:
            return json.loads(scrubbed), counts
        except ValueError:
            return self._scrub_parsed(document)

    def flags(self, texts: Iterable[str]) -> dict[str, str]:
        """Return the texts the final check would flag, each on its own, with the detector that flags it.

        This is :meth:`verify_tree`'s judgement for text that is not (yet) a file:
        the same detectors on a copy of the pseudonym map, plus every original the
        map holds. Where several detectors flag a text, the first by name is given.
        """
        leaks = LeakScanner(self.pseudonyms, self.options.known_usernames)
        pipeline = self._make_pipeline(self.pseudonyms.copy())
        unique = list(dict.fromkeys(texts))
        return {text: min(detectors) for text, detectors in zip(unique, scan_texts(unique, pipeline, leaks))
                if detectors}

    def kinds_checked(self) -> int:
        """How many kinds of secret the final check looks for (the detectors' and its second look's)."""
        return kinds_checked(self._pipeline)

    def _scrub_parsed(self, document: Any) -> tuple[Any, dict[str, int]]:
        """Scrub a parsed JSON document value by value; secret-named values are replaced whole."""
        counts: Counter[str] = Counter()

        def scrub_string(value: str) -> str:
            return Scrubber(self._pipeline, counts=counts).scrub(value)

        scrubbed = jsondoc.scrub_document(document, scrub_string, lambda name: counts.update((name,)))
        return scrubbed, dict(counts)

    def _learned_usernames(self) -> int:
        return len(self.pseudonyms.spellings(USERNAME)) if self.options.usernames else 0

    def redact_file(self, src: Path, dst: Path, relpath: str | None = None) -> FileRedaction:
        """Stream ``src`` into ``dst`` scrubbed, in bounded memory; never leave an unscrubbed or partial ``dst``.

        ``relpath`` names the file in the result (default: the file name). Binary or
        undecodable files, links and special files are dropped; any error while
        scrubbing drops the file and removes ``dst``. JSON files stay valid JSON.
        """
        src, dst = Path(src), Path(dst)
        name = relpath if relpath is not None else src.name
        try:
            mode = os.lstat(src).st_mode
        except OSError as error:
            return FileRedaction(name, NOT_SCRUBBED, {}, f"cannot read: {error.strerror or type(error).__name__}")
        if stat.S_ISLNK(mode):
            return FileRedaction(name, DROPPED, {}, "symbolic link: links are never followed")
        if not stat.S_ISREG(mode):
            return FileRedaction(name, DROPPED, {}, "not a regular file")
        try:
            raw = open(src, "rb")  # noqa: SIM115 - closed in the finally below
        except OSError as error:
            return FileRedaction(name, NOT_SCRUBBED, {}, f"cannot read: {error.strerror or type(error).__name__}")
        try:
            learned = self._learned_usernames()
            counts = self._scrub_file(raw, dst)
            if self._learned_usernames() != learned:
                # A user name learned on a later line must also go from the earlier ones.
                raw.seek(0)
                counts = self._scrub_file(raw, dst)
            if src.suffix.lower() == ".json":
                counts = self._keep_json_valid(src, dst, counts)
        except NotText as error:
            _remove(dst)
            return FileRedaction(name, DROPPED, {}, f"not text: {error}")
        except UnicodeError:
            _remove(dst)
            return FileRedaction(name, DROPPED, {}, "not text: neither UTF-8 nor UTF-16 with a byte-order mark")
        except Exception as error:  # fail closed: whatever went wrong, nothing unscrubbed may remain
            _remove(dst)
            # Only the error type: a message could quote the very content being scrubbed.
            return FileRedaction(name, DROPPED, {}, f"scrubbing failed ({type(error).__name__})")
        finally:
            raw.close()
        return FileRedaction(name, SCRUBBED, counts)

    def _scrub_file(self, raw: BinaryIO, dst: Path) -> dict[str, int]:
        encoding, pieces = read_text_chunks(raw)
        scrubber = Scrubber(self._pipeline)
        with atomic_text_writer(dst, encoding) as out:
            for piece in pieces:
                out.write(scrubber.scrub(piece))
        return dict(scrubber.counts)

    def _keep_json_valid(self, src: Path, dst: Path, counts: dict[str, int]) -> dict[str, int]:
        """If line scrubbing broke a valid JSON file, scrub its parsed document instead."""
        if dst.stat().st_size > JSON_CHECK_LIMIT:
            return counts
        try:
            json.loads(read_whole_text(dst))
            return counts
        except ValueError:
            pass
        original = read_whole_text(src)
        try:
            document = json.loads(original)
        except ValueError:
            return counts  # it was not JSON to begin with
        scrubbed, structural = self._scrub_parsed(document)
        with open(src, "rb") as raw:
            encoding, _ = read_text_chunks(raw)
        with atomic_text_writer(dst, encoding) as out:
            out.write(jsondoc.dump_like(scrubbed, original))
        return structural

    def redact_tree(self, src_root: Path, dst_root: Path) -> list[FileRedaction]:
        """Scrub every entry under ``src_root`` into the same relative path under ``dst_root``.

        Returns one result per entry, in walk order. Symlinks are dropped, unlistable
        directories are reported as not scrubbed. Files written before a user name was
        learned elsewhere in the tree are scrubbed again so the name is gone everywhere.
        """
        src_root, dst_root = Path(src_root), Path(dst_root)
        if dst_root.resolve().is_relative_to(src_root.resolve()):
            raise ValueError("the output directory must not be inside the directory being scrubbed")
        results: dict[str, FileRedaction] = {}
        learned_at: dict[str, int] = {}
        for entry in tree.walk(src_root):
            if entry.kind == tree.SYMLINK:
                results[entry.relpath] = FileRedaction(
                    entry.relpath, DROPPED, {}, "symbolic link: links are never followed"
                )
            elif entry.kind == tree.SPECIAL:
                results[entry.relpath] = FileRedaction(entry.relpath, DROPPED, {}, "not a regular file")
            elif entry.kind == tree.UNREADABLE:
                results[entry.relpath] = FileRedaction(entry.relpath, NOT_SCRUBBED, {}, f"cannot read: {entry.error}")
            else:
                results[entry.relpath] = self.redact_file(entry.path, dst_root / entry.relpath, entry.relpath)
                learned_at[entry.relpath] = self.pseudonyms.version
        if self.options.usernames:
            self._rescrub_late_names(src_root, dst_root, results, learned_at)
        return list(results.values())

    def _rescrub_late_names(
        self, src_root: Path, dst_root: Path, results: dict[str, FileRedaction], learned_at: dict[str, int]
    ) -> None:
        """Scrub again the outputs that still contain a user name learned after they were written."""
        for _ in range(_RESCRUB_ROUNDS):
            leaks = LeakScanner(self.pseudonyms, self.options.known_usernames, kinds=(USERNAME,))
            stale = [
                rel
                for rel, result in results.items()
                if result.status == SCRUBBED
                and learned_at.get(rel, self.pseudonyms.version) < self.pseudonyms.version
                and _has_leak(leaks, dst_root / rel)
            ]
            if not stale:
                return
            for rel in stale:
                results[rel] = self.redact_file(src_root / rel, dst_root / rel, rel)
                learned_at[rel] = self.pseudonyms.version

    def verify_tree(self, root: Path) -> list[Finding]:
        """Return what is still present in the final files under ``root`` (empty: safe to upload)."""
        return verify_tree(Path(root), self._make_pipeline, self.pseudonyms, self.options.known_usernames,
                           self._checked)

    def check_early(self, path: Path, *, unchanged_from: Path | None = None) -> None:
        """Let the final check read a finished output file now, while there is time (see :class:`CheckedContents`).

        Only when no detector depends on what the pseudonym map learns (no user
        names, host names or addresses are pseudonymised): then the detectors and the
        second look find in the same bytes the same things now as at the end.
        :meth:`verify_tree` reads every file again and uses these findings only for
        identical bytes; the originals the map holds are searched for at the end. ``unchanged_from``: the file
        ``path`` was scrubbed from, when that pass replaced nothing (see :meth:`CheckedContents.check`).
        """
        if not (self.options.usernames or self.options.hostnames or self.options.network):
            self._checked.check(Path(path), self._make_pipeline, self.pseudonyms, unchanged_from=unchanged_from)


def _has_leak(leaks: LeakScanner, path: Path) -> bool:
    try:
        return leaks.file_has_leak(path)
    except (OSError, NotText, UnicodeError):
        return True  # cannot tell: scrub it again, which drops it if it is still unreadable


def _remove(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()
