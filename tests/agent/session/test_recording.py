"""The asciicast v2 recording: header, timed output events, input only when asked, and playback."""

from __future__ import annotations

import json
import stat

import pytest

from agent.session.recording import Recording, read_cast
from protocol.errors import InvalidInputError


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_output_is_recorded_and_plays_back(tmp_path):
    clock = Clock()
    path = tmp_path / "s.cast"
    with Recording(path, width=120, height=40, env={"TERM": "xterm-256color", "SHELL": "/bin/bash", "PATH": "/x"}, title="T-1042", clock=clock) as rec:
        rec.output(b"$ ls\r\n")
        clock.now = 101.5
        rec.output("caf\u00e9\r\n".encode()[:4])  # a character split across two reads
        clock.now = 101.75
        rec.output("caf\u00e9\r\n".encode()[4:])
        rec.input(b"secret\r")
    cast = read_cast(path)
    assert cast.header["version"] == 2 and cast.header["width"] == 120 and cast.header["height"] == 40
    assert cast.header["env"] == {"TERM": "xterm-256color", "SHELL": "/bin/bash"}
    assert cast.header["title"] == "T-1042" and isinstance(cast.header["timestamp"], int)
    assert cast.events == [(0.0, "o", "$ ls\r\n"), (1.5, "o", "caf"), (1.75, "o", "\u00e9\r\n")]
    assert cast.output() == "$ ls\r\ncaf\u00e9\r\n"
    assert "secret" not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for line in path.read_text().splitlines():
        json.loads(line)  # one JSON document per line


def test_input_is_kept_only_when_asked(tmp_path):
    path = tmp_path / "s.cast"
    with Recording(path, width=80, height=24, record_input=True) as rec:
        rec.input(b"ls\r")
        rec.output(b"ls\r\n")
    cast = read_cast(path)
    assert [kind for _, kind, _ in cast.events] == ["i", "o"]
    assert cast.input() == "ls\r"


def test_nothing_is_written_after_close(tmp_path):
    path = tmp_path / "s.cast"
    rec = Recording(path, width=80, height=24)
    rec.close()
    rec.output(b"late")
    assert read_cast(path).events == []


def test_a_file_that_is_not_a_recording_is_refused(tmp_path):
    (tmp_path / "bad.cast").write_text('{"version": 1}\n')
    with pytest.raises(InvalidInputError):
        read_cast(tmp_path / "bad.cast")
