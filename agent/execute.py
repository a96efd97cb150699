"""Run one external, non-interactive program for the agent: argv only, bounded in time and output.

This is the only module of ``agent`` that imports :mod:`subprocess` (a test
holds it to that); callers such as diagnostics and the restic wrapper build an
argv tuple and decide what the result means. The session's PTY shell is one
other place that starts a process, in its own module, because an interactive
terminal needs none of what is here; a share's gathering process
(:mod:`agent.gathering`: this interpreter running Helpline's own module, spoken
to over pipes while the command runs) is the other.

Every run gets its own process group, a deadline, an optional byte cap on
stdout (streamed to a file or handed over line by line, never held whole in
memory), the last bytes of stderr for error messages, and a stop sequence —
the caller's chosen signal to the whole group, a grace period, then a kill —
used alike for the deadline, the cap and a cancellation from another thread.
Secrets the caller names are masked in every logged command line and error.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from protocol.errors import ExitStatus, HelplineError, InvalidInputError

logger = logging.getLogger("helpline.execute")

#: How much of stderr is kept (the last bytes), for error messages.
STDERR_TAIL_BYTES = 8 * 1024
#: How much is read from a pipe at a time.
CHUNK_BYTES = 64 * 1024
#: The longest stdout line handed to ``on_line``; a longer one stops the command like the cap.
MAX_LINE_BYTES = 1024 * 1024
#: Seconds between the chosen stop signal and the kill, unless the caller says otherwise.
DEFAULT_GRACE_SECONDS = 5.0
#: How long to wait for the pipe readers once the process is gone; a grandchild
#: that escaped the process group and keeps the pipe open must not hang us.
READER_GRACE_SECONDS = 2.0
#: What a secret becomes in a rendered command line or an error message.
MASK = "***"
_POLL_SECONDS = 0.05
_IS_WINDOWS = os.name == "nt"


class Outcome(str, Enum):
    """What an exit status means to the caller."""

    OK = "ok"
    WARNING = "warning"  # it finished, but something is worth telling (restic: some files unreadable)
    ERROR = "error"


#: The usual reading of exit statuses: 0 is success, anything else is an error.
SUCCESS_ONLY: Mapping[int, Outcome] = {0: Outcome.OK}


def outcome_of(exit_code: int | None, exit_codes: Mapping[int, Outcome] | None = None) -> Outcome:
    """Return what ``exit_code`` means by the table ``exit_codes`` (0 alone is ok by default); unlisted is an error."""
    if exit_code is None:
        return Outcome.ERROR
    return (SUCCESS_ONLY if exit_codes is None else exit_codes).get(exit_code, Outcome.ERROR)


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every occurrence of each non-empty secret replaced by :data:`MASK`."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def render_command(argv: Sequence[str], *, secrets: Iterable[str] = (), secret_args: Iterable[int] = ()) -> str:
    """Return ``argv`` as one shell-quoted line for logs and errors, with secrets masked.

    ``secret_args`` are positions in ``argv`` masked whole; ``secrets`` are
    values masked wherever they occur (``--password=hunter2`` included).
    """
    hidden = set(secret_args)
    secrets = tuple(secrets)
    return shlex.join(MASK if i in hidden else mask_text(str(arg), secrets) for i, arg in enumerate(argv))


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (one of another user counts); a pid of 0 or below names none."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill would end the process there
        import psutil

        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's
        return True
    return True


class CommandError(HelplineError):
    """A command failed to start, to finish or to succeed; carries the masked command line,
    its exit status and the (masked) tail of its stderr."""

    def __init__(
        self, message: str, *, command: str, exit_code: int | None, stderr_tail: str,
        hint: str | None = None, status: ExitStatus | None = None,
    ):
        super().__init__(message, hint=hint, status=status)
        self.command = command
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


@dataclass(frozen=True)
class Execution:
    """How one run went. ``bytes_written`` bytes of stdout reached the file or the line callback.

    ``exit_code`` is the process's own (negative for a signal on POSIX) and
    None when it never started. ``truncated`` means stdout went past the cap;
    ``stopped_at_cap`` that the command was stopped for it (rather than ending
    first). ``command`` and ``stderr_tail`` are already masked.
    """

    argv: tuple[str, ...]
    command: str
    exit_code: int | None
    duration: float
    bytes_written: int = 0
    timed_out: bool = False
    cancelled: bool = False
    truncated: bool = False
    stopped_at_cap: bool = False
    stderr_tail: str = ""
    pid: int | None = None
    not_found: bool = False
    start_error: OSError | None = None
    #: Something the command started kept its output open after it ended, even past a kill.
    pipes_left_open: bool = False

    @property
    def started(self) -> bool:
        """True when the process ran at all."""
        return self.pid is not None

    def outcome(self, exit_codes: Mapping[int, Outcome] | None = None) -> Outcome:
        """Return what this run means: an error if it did not start or was stopped, else by the exit-code table."""
        if not self.started or self.timed_out or self.cancelled or self.stopped_at_cap:
            return Outcome.ERROR
        return outcome_of(self.exit_code, exit_codes)

    def check(self, exit_codes: Mapping[int, Outcome] | None = None) -> Outcome:
        """Return :attr:`Outcome.OK` or :attr:`Outcome.WARNING`; raise :class:`CommandError` for anything else."""
        outcome = self.outcome(exit_codes)
        if outcome is not Outcome.ERROR:
            return outcome
        status, hint = None, None
        if self.not_found:
            message = f"{self.argv[0]} is not installed or not on PATH"
            status, hint = ExitStatus.CONFIG, f"install {Path(self.argv[0]).name} or add its folder to PATH"
        elif self.start_error is not None:
            message = f"could not start {self.command}: {self.start_error.strerror or self.start_error}"
        elif self.cancelled:
            message, status = f"{self.command} was cancelled", ExitStatus.INTERRUPTED
        elif self.timed_out:
            message = f"{self.command} did not finish in time and was stopped after {self.duration:.1f} s"
        elif self.stopped_at_cap:
            message = f"{self.command} printed more than its cap and was stopped ({self.bytes_written} bytes kept)"
        else:
            message = f"{self.command} exited with status {self.exit_code}"
        last_lines = [line for line in self.stderr_tail.strip().splitlines() if line.strip()][-3:]
        if last_lines:
            message += ": " + " | ".join(last_lines)
        raise CommandError(
            message, command=self.command, exit_code=self.exit_code, stderr_tail=self.stderr_tail,
            hint=hint, status=status,
        )


@dataclass(frozen=True)
class RunAs:
    """An OS user a command runs as: uid, primary gid and supplementary groups."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def run(
    argv: Sequence[str],
    *,
    timeout: float | None,
    output: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    max_bytes: int | None = None,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    cancel: threading.Event | None = None,
    stop_signal: int | None = signal.SIGTERM,
    grace: float = DEFAULT_GRACE_SECONDS,
    secrets: Iterable[str] = (),
    secret_args: Iterable[int] = (),
    as_user: RunAs | None = None,
) -> Execution:
    """Run ``argv`` (never through a shell) and return how it went; raise only for a call wrong in itself.

    ``as_user`` runs it as another OS user (their uid, gid and groups; the agent service acting for a user of
    the PC, which needs root): what it does, it does with that user's rights only.

    stdout goes to the file ``output`` or, decoded line by line without its
    line ending, to ``on_line`` (called in order from a reader thread; a last
    line without a newline is delivered too); with neither it is discarded.
    At most ``max_bytes`` of it are delivered (whole lines only with
    ``on_line``); past that the command is stopped. ``stdin`` bytes are fed to
    the command, which otherwise reads an empty stdin. ``env`` is laid over our
    environment, and the binary is looked up on the resulting PATH.

    When ``timeout`` seconds pass, ``cancel`` is set or the cap is passed, the
    whole process group gets ``stop_signal`` (on Windows a Ctrl-Break), then
    after ``grace`` seconds whatever is left of it is killed; ``stop_signal``
    None kills at once. If ``on_line`` raises, the command is stopped the same
    way and the exception re-raised. ``secrets`` (values) and ``secret_args``
    (positions in argv) are masked in what is logged and in the result.
    """
    if isinstance(argv, (str, bytes)):
        raise InvalidInputError("a command is an argv sequence, never a shell line")
    argv = tuple(str(arg) for arg in argv)
    if not argv or not argv[0]:
        raise InvalidInputError("a command needs a program to run")
    if timeout is not None and timeout <= 0:
        raise InvalidInputError(f"a command needs a positive timeout, got {timeout!r}")
    if max_bytes is not None and max_bytes < 0:
        raise InvalidInputError(f"a command needs a non-negative byte cap, got {max_bytes!r}")
    if output is not None and on_line is not None:
        raise InvalidInputError("stdout goes to a file or to a line callback, not both")
    if grace < 0:
        raise InvalidInputError(f"a command needs a non-negative grace period, got {grace!r}")

    identity = {}
    if as_user is not None:
        if os.name != "posix":
            raise InvalidInputError("running a command as another user is done on POSIX systems only")
        identity = {"user": as_user.uid, "group": as_user.gid, "extra_groups": list(as_user.groups)}
    secrets = tuple(secrets)
    command = render_command(argv, secrets=secrets, secret_args=secret_args)
    child_env = {**os.environ, **env} if env else dict(os.environ)
    started = time.monotonic()

    def unstarted(**fields) -> Execution:
        done = Execution(argv, command, None, time.monotonic() - started, **fields)
        logger.info("could not run %s: %s", command, "not found" if done.not_found else done.start_error)
        return done

    executable = _resolve(argv[0], child_env.get("PATH"), cwd)
    if executable is None:
        return unstarted(not_found=True)

    out = None
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        out = open(output, "wb")  # noqa: SIM115 - the stdout reader thread owns and closes it
    logger.debug("running %s", command)
    try:
        proc = subprocess.Popen(
            argv,
            executable=executable,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.DEVNULL if out is None and on_line is None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env,
            cwd=cwd,
            **identity,
            **_new_process_group(),
        )
    except OSError as exc:
        if out is not None:
            out.close()
            output.unlink(missing_ok=True)
        return unstarted(not_found=isinstance(exc, FileNotFoundError), start_error=exc)

    sink = _Stdout(out, on_line, max_bytes)
    stderr_tail = bytearray()
    # A secret cut in half where the tail begins must still be masked: keep enough before it to see it whole.
    overlap = max((len(secret.encode()) for secret in secrets), default=0)
    readers = [threading.Thread(target=_pump_stderr, args=(proc.stderr, stderr_tail, STDERR_TAIL_BYTES + overlap),
                                name=f"stderr:{argv[0]}", daemon=True)]
    if proc.stdout is not None:
        readers.append(threading.Thread(target=sink.pump, args=(proc.stdout,), name=f"stdout:{argv[0]}", daemon=True))
    if proc.stdin is not None:
        readers.append(threading.Thread(target=_feed_stdin, args=(proc.stdin, stdin),
                                        name=f"stdin:{argv[0]}", daemon=True))
    for reader in readers:
        reader.start()

    deadline = None if timeout is None else started + timeout
    timed_out = cancelled = stopped_at_cap = False
    exited = _ExitWatch(proc)
    try:
        while proc.poll() is None:
            if sink.overflowed.is_set():
                stopped_at_cap, why = True, "output over the cap"
            elif sink.error is not None:
                why = "its output handler failed"
            elif cancel is not None and cancel.is_set():
                cancelled, why = True, "cancelled"
            elif deadline is not None and time.monotonic() >= deadline:
                timed_out, why = True, "deadline passed"
            else:
                exited.wait(_POLL_SECONDS if deadline is None else min(_POLL_SECONDS, deadline - time.monotonic()))
                continue
            logger.info("stopping %s: %s", command, why)
            _stop(proc, stop_signal, grace)
    except BaseException:
        # Interrupted while supervising (Ctrl-C in the caller): never leave the command behind.
        _stop(proc, stop_signal, grace)
        raise
    finally:
        exited.close()

    if not _join(readers, READER_GRACE_SECONDS / 4):
        # The command is gone but something it started still holds the pipes open.
        _kill_group(proc)
    pipes_left_open = not _join(readers, READER_GRACE_SECONDS)
    duration = time.monotonic() - started
    done = Execution(
        argv, command, proc.returncode, duration,
        bytes_written=sink.written, timed_out=timed_out, cancelled=cancelled,
        truncated=sink.overflowed.is_set(), stopped_at_cap=stopped_at_cap,
        stderr_tail=_masked_tail(bytes(stderr_tail), STDERR_TAIL_BYTES, secrets),
        pid=proc.pid, pipes_left_open=pipes_left_open,
    )
    logger.debug("%s ended with status %s after %.2f s", command, done.exit_code, duration)
    if sink.error is not None:
        raise sink.error
    return done


def run_checked(
    argv: Sequence[str], *, exit_codes: Mapping[int, Outcome] | None = None, **options,
) -> Execution:
    """:func:`run` ``argv`` with ``options`` and :meth:`~Execution.check` the result by ``exit_codes``."""
    done = run(argv, **options)
    done.check(exit_codes)
    return done


def _resolve(program: str, path: str | None, cwd: Path | None) -> str | None:
    """Return the executable ``program`` names, looked up on the child's PATH (a relative path from ``cwd``)."""
    if cwd is not None and os.path.dirname(program) and not os.path.isabs(program):
        program = os.path.join(cwd, program)
    return shutil.which(program, path=path)


def _wait_a_moment(proc: subprocess.Popen, until: float | None) -> None:
    """Wait for the process at most one poll interval (less if ``until`` is sooner)."""
    step = _POLL_SECONDS if until is None else max(0.0, min(_POLL_SECONDS, until - time.monotonic()))
    try:
        proc.wait(timeout=step)
    except subprocess.TimeoutExpired:
        pass


class _ExitWatch:
    """Waits for a child's exit, woken the moment it exits: on Linux through a pidfd (no polling); elsewhere by
    Popen.wait's own polling, which may notice an exit up to its 0.05 s step late."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.fd: int | None = None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self.fd = pidfd_open(proc.pid)
            except OSError:  # an old kernel, or the child already reaped
                self.fd = None

    def wait(self, seconds: float) -> None:
        """Return when the child has exited, or after ``seconds``."""
        seconds = max(0.0, seconds)
        if self.fd is not None:
            import select

            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            poller.poll(seconds * 1000)
            return
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _join(threads: Sequence[threading.Thread], grace: float) -> bool:
    """Wait up to ``grace`` seconds in all for ``threads``; return True if they all finished."""
    until = time.monotonic() + grace
    for thread in threads:
        thread.join(max(0.0, until - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)


class _Stdout:
    """Where stdout goes: a file or a line callback, up to a byte cap, flagging the overflow."""

    def __init__(self, out, on_line: Callable[[str], None] | None, cap: int | None):
        self.out = out
        self.on_line = on_line
        self.cap = cap
        self.written = 0
        self.overflowed = threading.Event()
        self.error: BaseException | None = None
        self._partial = bytearray()

    def pump(self, pipe) -> None:
        """Copy the pipe chunk by chunk; keep draining after an overflow or a failure so the child never blocks."""
        try:
            while chunk := pipe.read1(CHUNK_BYTES):
                if not self.overflowed.is_set() and self.error is None:
                    self._take(chunk)
            if self._partial and not self.overflowed.is_set() and self.error is None:
                self._deliver_line(bytes(self._partial))
        except (OSError, ValueError):
            pass  # the pipe closed under us when the process was killed
        finally:
            if self.out is not None:
                self.out.close()
            pipe.close()

    def _take(self, chunk: bytes) -> None:
        if self.on_line is None:
            self._write(chunk)
            return
        self._partial.extend(chunk)
        while self.error is None and not self.overflowed.is_set():
            end = self._partial.find(b"\n")
            if end < 0:
                if len(self._partial) > min(MAX_LINE_BYTES, self._room()):
                    self.overflowed.set()
                return
            line = bytes(self._partial[: end + 1])
            del self._partial[: end + 1]
            self._deliver_line(line)

    def _room(self) -> int:
        return MAX_LINE_BYTES if self.cap is None else self.cap - self.written

    def _deliver_line(self, line: bytes) -> None:
        """Hand one line to the callback if it fits under the cap; flag the overflow if it does not."""
        if len(line) > min(MAX_LINE_BYTES, self._room()):
            self.overflowed.set()
            return
        self.written += len(line)
        text = line.decode("utf-8", errors="replace")
        try:
            self.on_line(text.removesuffix("\n").removesuffix("\r"))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller by run()
            self.error = exc

    def _write(self, chunk: bytes) -> None:
        """Write what fits under the cap; flag the overflow when a chunk does not fit."""
        room = len(chunk) if self.cap is None else self.cap - self.written
        if len(chunk) > room:
            if room > 0:
                self.out.write(chunk[:room])
                self.written += room
            self.overflowed.set()
            return
        self.out.write(chunk)
        self.written += len(chunk)


def _pump_stderr(pipe, tail: bytearray, keep: int) -> None:
    """Keep only the last ``keep`` bytes of stderr."""
    try:
        while chunk := pipe.read1(CHUNK_BYTES):
            tail.extend(chunk)
            if len(tail) > keep:
                del tail[: len(tail) - keep]
    except (OSError, ValueError):
        pass
    finally:
        pipe.close()


def _masked_tail(raw: bytes, keep: int, secrets: Iterable[str]) -> str:
    """Return the last ``keep`` bytes of ``raw`` as text, every secret that reaches into them masked whole."""
    start = max(0, len(raw) - keep)
    needles = sorted({secret.encode() for secret in secrets if secret}, key=len, reverse=True)
    kept, pos = [], start
    if needles:
        for found in re.finditer(b"|".join(re.escape(needle) for needle in needles), raw):
            if found.end() <= start:
                continue
            kept += [raw[pos:max(pos, found.start())], MASK.encode()]
            pos = found.end()
    kept.append(raw[pos:])
    return b"".join(kept).decode("utf-8", errors="replace")


def _feed_stdin(pipe, data: bytes) -> None:
    """Write ``data`` to the command's stdin and close it; a command that stops reading is not an error."""
    try:
        pipe.write(data)
    except (OSError, ValueError):
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _stop(proc: subprocess.Popen, stop_signal: int | None, grace: float) -> None:
    """Stop the command's process group: ``stop_signal``, up to ``grace`` seconds for all of it to end, then a kill.

    The kill reaches whatever of the group is left, so a child that ignores the
    signal does not outlive the command; ``stop_signal`` None kills at once.
    """
    if stop_signal is not None:
        _signal_group(proc, stop_signal)
        kill_at = time.monotonic() + grace
        while time.monotonic() < kill_at and (proc.poll() is None or _group_alive(proc)):
            if proc.returncode is None:
                _wait_a_moment(proc, kill_at)
            else:  # the command is gone; the rest of its group gets the rest of the grace period
                time.sleep(max(0.0, min(_POLL_SECONDS, kill_at - time.monotonic())))
    if stop_signal is None or proc.poll() is None or _group_alive(proc):
        _kill_group(proc)
    proc.wait()


def _new_process_group() -> dict:
    """Popen arguments that put the command in its own process group, so a stop reaches its children."""
    if _IS_WINDOWS:
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to the command's process group (Ctrl-Break to its console group on Windows)."""
    try:
        if _IS_WINDOWS:
            proc.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError, OSError):
        pass  # already gone; the kill that follows the grace period covers the rest


def _group_alive(proc: subprocess.Popen) -> bool:
    """True if any process of the command's group is still there (on Windows: the command itself)."""
    if _IS_WINDOWS:
        return proc.poll() is None
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(proc: subprocess.Popen) -> None:
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
        if proc.poll() is None:
            proc.kill()
