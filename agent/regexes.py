"""A cache of compiled regular expressions, kept beside the agent's bytecode.

Redaction and the collectors compile about two hundred patterns when they are
imported, and compiling them (parsing, then generating the matcher's code) is
the largest single cost of starting `helpline share`: more than the rest of the
imports together. What the compiler produces depends only on the pattern, its
flags and the interpreter, so it is cached the way Python caches bytecode: in
``agent/__pycache__/regexes.<tag>.bin``, written where that directory is
writable and bytecode may be written (``python -m agent.regexes`` fills it when
the agent is installed, as ``compileall`` does for the bytecode).

A cached entry is used only when the file is whole (its digest matches), was
written by this very interpreter, and could only have been written by the user
or root (neither group- nor world-writable). The regular-expression engine
checks the code it is handed in any case, and an entry is recorded only after
it compiled to a pattern equal to the one ``re.compile`` returns. Anything
unexpected (another interpreter's internals, a damaged file) falls back to
``re.compile``: the cache can make start-up faster, never change a match.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import re
import sys
import tempfile
from pathlib import Path

try:  # The compiler's internals: present on CPython 3.11 and later, used only when they are.
    import _sre
    from re import _compiler, _parser
except ImportError:  # pragma: no cover - another implementation: plain re.compile
    _sre = _compiler = _parser = None

#: The file's first bytes; the format's number is part of the key below.
MAGIC = b"HLRX"
FORMAT = 1
#: The most entries the file holds: the agent compiles about 250 patterns, each the same text on every run (a
#: pattern built from a set in iteration order would add an entry per run; the cap bounds the file). A full
#: cache keeps the patterns the running process uses and forgets the others.
MAX_ENTRIES = 1000
_DIGEST = 32
#: Flags whose compilation the cache does not reproduce (they print or warn); re.TEMPLATE is gone in 3.13.
_UNCACHED_FLAGS = re.DEBUG | getattr(re, "TEMPLATE", 0)


def interpreter_key() -> tuple:
    """What the compiled code depends on besides the pattern: this interpreter and its engine."""
    return (FORMAT, sys.version, sys.implementation.cache_tag, getattr(_sre, "MAGIC", None),
            getattr(_sre, "CODESIZE", None), sys.maxunicode)


def _trusted(st: os.stat_result) -> bool:
    """Whether a cache file could only have been written by this user or root.

    Windows' file modes do not say who may write (its ACLs do): there the cache is not read.
    """
    if os.name == "nt" or not hasattr(os, "getuid"):
        return False
    return not st.st_mode & 0o022 and st.st_uid in (os.getuid(), 0)


class RegexCache:
    """Compile patterns through a file of cached compiler output.

    ``write``: record and save new patterns (None: when the directory is
    writable and the interpreter may write bytecode).
    """

    def __init__(self, path: Path | None, write: bool | None = None) -> None:
        self.path = path
        self.hits = 0
        self.misses = 0
        self._entries: dict[tuple, tuple] = {}
        self._used: set[tuple] = set()  # the entries this process compiled: kept when the cache is full
        self._compiled: dict[tuple, re.Pattern] = {}  # this process's patterns, as re's own cache keeps them
        self._new = 0
        self._loaded = False
        self._write = write

    # -- reading ------------------------------------------------------------------------
    def _load(self) -> None:
        self._loaded = True
        if self.path is None or _sre is None:
            return
        try:
            with open(self.path, "rb") as file:
                if not _trusted(os.fstat(file.fileno())):
                    return
                data = file.read()
        except OSError:
            return
        if len(data) < len(MAGIC) + _DIGEST or not data.startswith(MAGIC):
            return
        digest, payload = data[len(MAGIC):len(MAGIC) + _DIGEST], data[len(MAGIC) + _DIGEST:]
        if hashlib.sha256(payload).digest() != digest:
            return
        try:
            key, entries = marshal.loads(payload)
        except (EOFError, ValueError, TypeError):
            return
        if key == interpreter_key() and isinstance(entries, dict):
            self._entries = entries

    def __len__(self) -> int:
        if not self._loaded:
            self._load()
        return len(self._entries)

    # -- compiling ----------------------------------------------------------------------
    def compile(self, pattern: str | bytes, flags: int | re.RegexFlag = 0) -> re.Pattern:
        """``re.compile(pattern, flags)``, from the cache when it holds the pattern.

        For the agent's own patterns: one compiled from data (this PC's names) would be written to the file.
        """
        flags = int(flags)
        key = (pattern, flags)
        compiled = self._compiled.get(key)
        if compiled is not None:
            return compiled
        if _sre is None or not isinstance(pattern, (str, bytes)) or flags & _UNCACHED_FLAGS:
            return re.compile(pattern, flags)
        compiled = self._compiled[key] = self._compile(pattern, flags)
        return compiled

    def _compile(self, pattern: str | bytes, flags: int) -> re.Pattern:
        if not self._loaded:
            self._load()
        key = (pattern, flags)
        entry = self._entries.get(key)
        if entry is not None:
            try:
                compiled = _sre.compile(pattern, *entry)
            except (TypeError, ValueError, RuntimeError, OverflowError):
                self._entries.pop(key, None)  # not this engine's code: compile it afresh below
            else:
                self.hits += 1
                self._used.add(key)
                return compiled
        self.misses += 1
        compiled = re.compile(pattern, flags)  # raises re.error on a bad pattern, as callers expect
        if self._recording() and self._room():
            entry = self._compiler_output(pattern, flags)
            if entry is not None and self._rebuilds(pattern, entry, compiled):
                self._entries[key] = entry
                self._used.add(key)
                self._new += 1
        return compiled

    def _room(self) -> bool:
        """Whether another entry may be recorded; a full cache first forgets the patterns this process has not
        used (those of code that has changed since, in a source checkout)."""
        if len(self._entries) >= MAX_ENTRIES:
            self._entries = {key: entry for key, entry in self._entries.items() if key in self._used}
        return len(self._entries) < MAX_ENTRIES

    @staticmethod
    def _rebuilds(pattern: str | bytes, entry: tuple, compiled: re.Pattern) -> bool:
        """Whether ``entry`` gives this engine exactly ``compiled`` (not where its internals differ from 3.11's)."""
        try:
            return _sre.compile(pattern, *entry) == compiled
        except (TypeError, ValueError, RuntimeError, OverflowError):
            return False

    @staticmethod
    def _compiler_output(pattern: str | bytes, flags: int) -> tuple | None:
        """What ``re`` hands the engine for ``pattern``: (flags, code, groups, groupindex, indexgroup)."""
        try:
            parsed = _parser.parse(pattern, flags)
            code = _compiler._code(parsed, flags)
            state = parsed.state
            indexgroup = [None] * state.groups
            for name, index in state.groupdict.items():
                indexgroup[index] = name
            entry = (int(flags | state.flags), [int(word) for word in code], state.groups - 1, dict(state.groupdict), tuple(indexgroup))
            marshal.dumps(entry)
        except Exception:  # noqa: BLE001 - internals that differ from 3.11's: do not record
            return None
        return entry

    # -- writing ------------------------------------------------------------------------
    def _recording(self) -> bool:
        if self._write is None:
            self._write = bool(self.path is not None and not sys.dont_write_bytecode
                               and os.access(self.path.parent if self.path.parent.exists()
                                             else self.path.parent.parent, os.W_OK))
        return self._write and self.path is not None

    def save(self) -> bool:
        """Write the cache if it gained patterns; True when written. Failure to write is not an error."""
        if not self._new or not self._recording():
            return False
        payload = marshal.dumps((interpreter_key(), self._entries))
        data = MAGIC + hashlib.sha256(payload).digest() + payload
        temp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.chmod(temp, 0o644)
            os.replace(temp, self.path)
        except OSError:
            if temp is not None:
                try:
                    os.unlink(temp)
                except OSError:
                    pass
            return False
        self._new = 0
        return True


def _default_path() -> Path | None:
    tag = sys.implementation.cache_tag
    if tag is None or os.name == "nt":  # see _trusted
        return None
    return Path(__file__).resolve().parent / "__pycache__" / f"regexes.{tag}.bin"


#: The agent's cache; ``rx`` compiles through it.
AGENT_CACHE = RegexCache(_default_path())
rx = AGENT_CACHE.compile


def warm() -> int:
    """Compile every pattern the agent compiles at import and write the cache; return how many the file holds
    now (0: it could not be written, or this interpreter keeps no cache)."""
    import importlib

    AGENT_CACHE._write = AGENT_CACHE.path is not None  # noqa: SLF001 - an explicit request to write
    for module in ("agent.redaction", "agent.redaction.verify", "agent.diagnostics.collectors", "agent.bundle.build",
                   "agent.bundle.diff"):
        importlib.import_module(module)
    AGENT_CACHE.save()
    return len(RegexCache(AGENT_CACHE.path, write=False)) if AGENT_CACHE.path is not None else 0


if __name__ == "__main__":
    # Run as a script this module is ``__main__``; the agent's modules compile through ``agent.regexes``.
    from agent import regexes

    held = regexes.warm()
    if not held:
        sys.exit(f"helpline: the agent's pattern cache could not be written ({regexes.AGENT_CACHE.path or 'none here'})")
    print(f"{held} patterns cached in {regexes.AGENT_CACHE.path}")
