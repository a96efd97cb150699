"""The session recording as asciicast v2: a JSON header line, then one ``[time, "o"|"i", text]`` line per event.

Output is recorded by default; what the engineer typed only when asked, because
keystrokes can hold passwords. Events are streamed to the file as they happen, so a
session that ends abruptly still leaves a playable recording.
"""

from __future__ import annotations

import codecs
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from protocol.errors import InvalidInputError


class Recording:
    """An asciicast v2 file being written; thread-safe, so output and input pumps can share it."""

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        env: Mapping[str, str] | None = None,
        title: str | None = None,
        record_input: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path)
        self.record_input = record_input
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._decoders = {"o": codecs.getincrementaldecoder("utf-8")("replace"), "i": codecs.getincrementaldecoder("utf-8")("replace")}
        header: dict[str, Any] = {"version": 2, "width": int(width), "height": int(height), "timestamp": int(time.time())}
        header["env"] = {key: value for key, value in (env or {}).items() if key in ("TERM", "SHELL")}
        if title:
            header["title"] = title
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file: TextIO | None = os.fdopen(fd, "w", encoding="utf-8")
        self._file.write(json.dumps(header) + "\n")
        self._file.flush()

    def _event(self, kind: str, data: bytes | memoryview) -> None:
        with self._lock:
            if self._file is None:
                return
            text = self._decoders[kind].decode(bytes(data))
            if text:
                stamp = round(self._clock() - self._start, 6)
                self._file.write(json.dumps([stamp, kind, text], ensure_ascii=False) + "\n")
                self._file.flush()

    def output(self, data: bytes | memoryview) -> None:
        """Record bytes the terminal showed."""
        self._event("o", data)

    def input(self, data: bytes | memoryview) -> None:
        """Record bytes typed into the terminal, if this recording keeps input."""
        if self.record_input:
            self._event("i", data)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Cast:
    """A recording read back: its header and its events in order."""

    header: dict[str, Any]
    events: list[tuple[float, str, str]]

    def output(self) -> str:
        """Everything the terminal showed, as one string."""
        return "".join(text for _, kind, text in self.events if kind == "o")

    def input(self) -> str:
        return "".join(text for _, kind, text in self.events if kind == "i")


def read_cast(path: Path) -> Cast:
    """Read an asciicast v2 file; raise InvalidInputError if it is not one."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0])
        if header.get("version") != 2:
            raise ValueError("not version 2")
        events = []
        for line in lines[1:]:
            if line.strip():
                stamp, kind, text = json.loads(line)
                events.append((float(stamp), str(kind), str(text)))
    except (IndexError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"{path} is not an asciicast v2 recording.") from exc
    return Cast(header, events)
