"""Run one diagnostic command with a deadline and a byte cap, streaming its output to a file.

This is the only module of ``agent.diagnostics`` that imports :mod:`subprocess`.
Like sos's ``sos_get_command_output``, :func:`run_command` *returns* a status
instead of raising, so one missing, hung or failing command never sinks the
bundle: a missing binary is ``not_found`` (127 in sos), a command killed at its
deadline is ``timeout`` (124), output beyond the cap is ``truncated``, a nonzero
exit is ``error`` with its exit code and its output kept.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import InvalidInputError

from .model import ItemStatus

#: How much of stderr is kept (the last bytes), for the note of a failed item.
STDERR_TAIL_BYTES = 8 * 1024
#: How much is read from a pipe at a time; output is never held whole in memory.
CHUNK_BYTES = 64 * 1024
#: How long to wait for the pipe readers once the process is gone; a grandchild
#: that escaped the process group and keeps the pipe open must not hang us.
READER_GRACE_SECONDS = 2.0
_POLL_SECONDS = 0.05
_IS_WINDOWS = os.name == "nt"


@dataclass(frozen=True)
class CommandResult:
    """How one command run went; ``size`` bytes of its stdout are in the destination file."""

    argv: tuple[str, ...]
    status: ItemStatus
    exit_code: int | None
    duration: float
    size: int
    truncated: bool
    stderr_tail: str
    note: str | None = None
    pid: int | None = None


def command_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment a command runs with: ours, the C locale on POSIX (parseable output), then ``env``."""
    merged = dict(os.environ)
    if not _IS_WINDOWS:
        merged["LC_ALL"] = "C"
    if env:
        merged.update(env)
    return merged


def run_command(
    argv: Sequence[str],
    dest: Path,
    *,
    timeout: float,
    max_bytes: int,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run ``argv`` (never through a shell), stream at most ``max_bytes`` of stdout to ``dest``.

    The command runs only if its binary exists; it is killed with its whole
    process group when ``timeout`` seconds pass or when its output exceeds
    ``max_bytes``. Return a :class:`CommandResult`; raise only for a call that
    is wrong in itself (empty argv, non-positive timeout, negative cap).
    """
    argv = tuple(str(arg) for arg in argv)
    if not argv or not argv[0]:
        raise InvalidInputError("run_command needs a command to run")
    if timeout <= 0:
        raise InvalidInputError(f"run_command needs a positive timeout, got {timeout!r}")
    if max_bytes < 0:
        raise InvalidInputError(f"run_command needs a non-negative byte cap, got {max_bytes!r}")

    started = time.monotonic()
    executable = shutil.which(argv[0], path=command_env(env).get("PATH"))
    if executable is None:
        return CommandResult(
            argv, ItemStatus.NOT_FOUND, None, time.monotonic() - started, 0, False, "",
            note=f"{argv[0]} is not installed or not on PATH",
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    out = open(dest, "wb")  # noqa: SIM115 - the stdout reader thread owns and closes it
    try:
        proc = subprocess.Popen(
            argv,
            executable=executable,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=command_env(env),
            **_new_process_group(),
        )
    except OSError as exc:
        out.close()
        dest.unlink(missing_ok=True)
        status = {
            PermissionError: ItemStatus.DENIED,
            FileNotFoundError: ItemStatus.NOT_FOUND,
        }.get(type(exc), ItemStatus.ERROR)
        return CommandResult(
            argv, status, None, time.monotonic() - started, 0, False, "",
            note=f"could not start {argv[0]}: {exc.strerror or exc}",
        )

    sink = _CappedSink(out, max_bytes)
    stderr_tail = bytearray()
    stdout_reader = threading.Thread(
        target=_pump_stdout, args=(proc.stdout, sink), name=f"stdout:{argv[0]}", daemon=True
    )
    stderr_reader = threading.Thread(
        target=_pump_stderr, args=(proc.stderr, stderr_tail), name=f"stderr:{argv[0]}", daemon=True
    )
    stdout_reader.start()
    stderr_reader.start()

    deadline = started + timeout
    timed_out = False
    stopped_at_cap = False
    while True:
        try:
            proc.wait(timeout=max(0.0, min(_POLL_SECONDS, deadline - time.monotonic())))
            break
        except subprocess.TimeoutExpired:
            if sink.overflowed.is_set():
                stopped_at_cap = True
            elif time.monotonic() >= deadline:
                timed_out = True
            else:
                continue
            _kill_process_tree(proc)
            proc.wait()
            break

    readers_stuck = not _join_readers((stdout_reader, stderr_reader), READER_GRACE_SECONDS / 4)
    if readers_stuck:
        # The command is gone but something it started still holds the pipes open.
        _kill_process_tree(proc)
        readers_stuck = not _join_readers((stdout_reader, stderr_reader), READER_GRACE_SECONDS)
    duration = time.monotonic() - started
    tail = bytes(stderr_tail).decode("utf-8", errors="replace")
    truncated = sink.overflowed.is_set()

    notes = []
    if timed_out:
        status, exit_code = ItemStatus.TIMEOUT, None
        notes.append(f"killed after {timeout:.1f} s; output so far kept")
    elif stopped_at_cap:
        status, exit_code = ItemStatus.TRUNCATED, None
        notes.append(f"output exceeded {max_bytes} bytes; first {max_bytes} kept, command stopped")
    elif proc.returncode != 0:
        status, exit_code = ItemStatus.ERROR, proc.returncode
        notes.append(f"exited with status {proc.returncode}")
        if truncated:
            notes.append(f"output exceeded {max_bytes} bytes; first {max_bytes} kept")
    elif truncated:
        status, exit_code = ItemStatus.TRUNCATED, 0
        notes.append(f"output exceeded {max_bytes} bytes; first {max_bytes} kept")
    else:
        status, exit_code = ItemStatus.OK, 0
    if readers_stuck:
        notes.append("a child process kept the output pipe open after the command ended")
    return CommandResult(
        argv, status, exit_code, duration, sink.written, truncated, tail,
        note="; ".join(notes) or None, pid=proc.pid,
    )


def _join_readers(readers: Sequence[threading.Thread], grace: float) -> bool:
    """Wait up to ``grace`` seconds in all for the pipe readers; return True if they all finished."""
    until = time.monotonic() + grace
    for reader in readers:
        reader.join(max(0.0, until - time.monotonic()))
    return not any(reader.is_alive() for reader in readers)


class _CappedSink:
    """Write chunks to a file until ``cap`` bytes, then discard and flag the overflow."""

    def __init__(self, out, cap: int):
        self.out = out
        self.cap = cap
        self.written = 0
        self.overflowed = threading.Event()

    def write(self, chunk: bytes) -> None:
        """Write what fits under the cap; flag the overflow when a chunk does not fit."""
        room = self.cap - self.written
        if len(chunk) > room:
            if room > 0:
                self.out.write(chunk[:room])
                self.written += room
            self.overflowed.set()
            return
        self.out.write(chunk)
        self.written += len(chunk)


def _pump_stdout(pipe, sink: _CappedSink) -> None:
    """Copy the pipe into the sink chunk by chunk; keep draining past the cap so the child never blocks."""
    try:
        while chunk := pipe.read1(CHUNK_BYTES):
            if not sink.overflowed.is_set():
                sink.write(chunk)
    except (OSError, ValueError):
        pass  # the pipe closed under us when the process was killed
    finally:
        sink.out.close()
        pipe.close()


def _pump_stderr(pipe, tail: bytearray) -> None:
    """Keep only the last :data:`STDERR_TAIL_BYTES` of stderr."""
    try:
        while chunk := pipe.read1(CHUNK_BYTES):
            tail.extend(chunk)
            if len(tail) > STDERR_TAIL_BYTES:
                del tail[: len(tail) - STDERR_TAIL_BYTES]
    except (OSError, ValueError):
        pass
    finally:
        pipe.close()


def _new_process_group() -> dict:
    """Popen arguments that put the command in its own process group, so a kill reaches its children."""
    if _IS_WINDOWS:
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        return {"creationflags": flags}
    return {"start_new_session": True}


def _kill_process_tree(proc: subprocess.Popen) -> None:
    """Kill the command and everything it started."""
    if _IS_WINDOWS:
        taskkill = shutil.which("taskkill")
        if taskkill:
            try:
                subprocess.run(
                    (taskkill, "/F", "/T", "/PID", str(proc.pid)),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    timeout=5, check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                pass  # fall back to killing the command itself
        proc.kill()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
