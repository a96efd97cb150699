"""Run one diagnostic command with a deadline and a byte cap, streaming its output to a file.

Diagnostics' policy on top of :mod:`agent.execute` (which does the running):
commands speak the C locale so their output parses, are killed at once at
their deadline or cap, and, like sos's ``sos_get_command_output``,
:func:`run_command` *returns* a status instead of raising, so one missing, hung
or failing command never sinks the bundle: a missing binary is ``not_found``
(127 in sos), a command killed at its deadline is ``timeout`` (124), output
beyond the cap is ``truncated``, a nonzero exit is ``error`` with its exit code
and its output kept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import InvalidInputError

from .. import execute
from ..execute import STDERR_TAIL_BYTES
from .model import ItemStatus

__all__ = ["STDERR_TAIL_BYTES", "CommandResult", "command_env", "run_command"]

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
    merged.update(_extra_env(env))
    return merged


def _extra_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """What diagnostics lays over our environment: the C locale on POSIX, then ``env``."""
    extra = {} if _IS_WINDOWS else {"LC_ALL": "C"}
    extra.update(env or {})
    return extra


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
    if timeout is None:
        raise InvalidInputError("run_command needs a timeout")
    if max_bytes is None:
        raise InvalidInputError("run_command needs a byte cap")
    done = execute.run(
        argv, output=dest, timeout=timeout, max_bytes=max_bytes, env=_extra_env(env), stop_signal=None,
    )
    return _result_of(done, timeout, max_bytes)


def _result_of(done: execute.Execution, timeout: float, max_bytes: int) -> CommandResult:
    """Read an execution the diagnostics way: one status, the exit code only for a command that ended itself."""
    argv = done.argv
    if not done.started:
        if done.not_found and done.start_error is None:
            status, note = ItemStatus.NOT_FOUND, f"{argv[0]} is not installed or not on PATH"
        else:
            exc = done.start_error
            status = {
                PermissionError: ItemStatus.DENIED,
                FileNotFoundError: ItemStatus.NOT_FOUND,
            }.get(type(exc), ItemStatus.ERROR)
            note = f"could not start {argv[0]}: {exc.strerror or exc}"
        return CommandResult(argv, status, None, done.duration, 0, False, "", note=note)

    notes = []
    kept = f"output exceeded {max_bytes} bytes; first {max_bytes} kept"
    if done.timed_out:
        status, exit_code = ItemStatus.TIMEOUT, None
        notes.append(f"killed after {timeout:.1f} s; output so far kept")
    elif done.stopped_at_cap:
        status, exit_code = ItemStatus.TRUNCATED, None
        notes.append(kept + ", command stopped")
    elif done.exit_code != 0:
        status, exit_code = ItemStatus.ERROR, done.exit_code
        notes.append(f"exited with status {done.exit_code}")
        if done.truncated:
            notes.append(kept)
    elif done.truncated:
        status, exit_code = ItemStatus.TRUNCATED, 0
        notes.append(kept)
    else:
        status, exit_code = ItemStatus.OK, 0
    if done.pipes_left_open:
        notes.append("a child process kept the output pipe open after the command ended")
    return CommandResult(
        argv, status, exit_code, done.duration, done.bytes_written, done.truncated, done.stderr_tail,
        note="; ".join(notes) or None, pid=done.pid,
    )
