"""The user's shell in a pseudo-terminal, and commands on pipes: start, read, write, and end with every process started.

Besides :mod:`agent.execute`, this is the one module of ``agent`` that starts a
process: an interactive terminal needs a PTY as its controlling terminal, and a
session's commands need none of the executor's deadlines or output caps. A shell
(:func:`start_terminal`) runs in a PTY; a command the engineer runs without asking
for a terminal (:func:`start_piped`) gets three pipes, as an SSH server gives it,
so bulk copies are not paced by a PTY's small buffer. Either way the process gets
its own session and process group; ending it hangs up every process group of that
session, then kills what is left after a grace, so nothing the engineer started
outlives the session. POSIX only: on Windows, both raise a clear error.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

from protocol.errors import ConfigError, HelplineError

WINDOWS_MESSAGE = "sessions are not available on Windows yet"
if os.name == "nt":  # pragma: no cover - exercised on Windows only
    fcntl = pwd = termios = tty = None
else:
    import fcntl
    import pwd
    import termios
    import tty


def _require_posix() -> None:
    if os.name == "nt" or fcntl is None:
        raise HelplineError(WINDOWS_MESSAGE, hint="Use a Linux or macOS PC for a remote session.")


def login_shell() -> str:
    """The approving user's login shell: the password database first, then $SHELL, then /bin/sh."""
    _require_posix()
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        shell = ""
    for candidate in (shell, os.environ.get("SHELL", ""), "/bin/sh"):
        if candidate and os.path.isabs(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise ConfigError("No usable login shell was found for this user.")


def shell_environment(shell: str, term: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A login environment as an SSH server gives it: who, where, which shell and terminal; the locale kept.

    The session process's own environment is not passed on whole, so nothing it
    holds (tokens, proxies set for Helpline) reaches the engineer's shell.
    """
    _require_posix()
    entry = pwd.getpwuid(os.getuid())
    env = {
        "HOME": entry.pw_dir,
        "USER": entry.pw_name,
        "LOGNAME": entry.pw_name,
        "SHELL": shell,
        "TERM": term,
        "PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin",
        "HELPLINE_SESSION": "1",
    }
    for name, value in os.environ.items():
        if name == "LANG" or name.startswith("LC_") or name == "TZ":
            env[name] = value
    env.update(extra or {})
    return env


def _take_terminal() -> None:
    # Runs in the child between fork and exec: the new session leader adopts the PTY
    # on stdin as its controlling terminal, so job control and ^C work as in any login.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _SessionProcess(ABC):
    """A process leading its own session: wait for it, find every process of its session, end them all."""

    def __init__(self, process: subprocess.Popen):
        self._process = process
        self.pid = process.pid
        self.pgid = process.pid  # a session leader leads its own process group
        self._closed = False
        self._end_lock = threading.Lock()

    @abstractmethod
    def _close_fds(self) -> None:
        """Close this side's ends of the process's terminal or pipes (each kind holds its own)."""

    def poll(self) -> int | None:
        """The exit status once it has exited, else None."""
        return self._process.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds for the process to exit; return its status or None if it still runs."""
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def members(self) -> list[int]:
        """Pids of the live processes in the shell's session (every job it started, in any process group).

        Zombies are left out: they run nothing, and their reaper may not be us.
        """
        if not os.path.isdir("/proc"):  # macOS: no /proc; the shell's own group is what can be found
            return [self.pid] if self._alive_group(self.pgid) else []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # After the command name: state, parent, process group, session.
            if len(fields) > 3 and fields[0] != b"Z" and int(fields[3]) == self.pid:
                found.append(int(entry))
        return found

    @staticmethod
    def _alive_group(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def _signal_session(self, signum: int) -> int:
        groups = {self.pgid}
        for pid in self.members():
            try:
                groups.add(os.getpgid(pid))
            except OSError:
                continue
        sent = 0
        for pgid in groups:
            try:
                os.killpg(pgid, signum)
                sent += 1
            except (ProcessLookupError, PermissionError):
                continue
        return sent

    def end(self, grace: float = 1.0) -> int | None:
        """Hang up every process group of the shell's session, kill what is left after ``grace``, reap the shell.

        Safe to call more than once and from any thread; returns the exit status of the session leader.
        """
        with self._end_lock:
            if not self._closed:
                self._signal_session(signal.SIGHUP)
                self._signal_session(signal.SIGCONT)  # stopped jobs must run to see the hangup
                until = time.monotonic() + grace
                while time.monotonic() < until and (self._process.poll() is None or self.members()):
                    time.sleep(0.02)
                self._signal_session(signal.SIGKILL)
                status = self.wait(5)
                until = time.monotonic() + 2
                while time.monotonic() < until and self.members():
                    time.sleep(0.02)
                self._close_fds()
                self._closed = True
                return status
            return self._process.poll()

    @property
    def ended(self) -> bool:
        return self._closed


class Terminal(_SessionProcess):
    """A process running in its own PTY and session; the master side is read and written here."""

    def __init__(self, process: subprocess.Popen, master: int):
        super().__init__(process)
        self.master = master

    def _close_fds(self) -> None:
        try:
            os.close(self.master)
        except OSError:
            pass

    def read(self, size: int = 65536) -> bytes:
        """Up to ``size`` bytes of output; b"" once the terminal has no more (the shell and its jobs exited).

        A PTY hands out a few KiB per read; what is already waiting is gathered into
        one block, so a burst of output travels in a few large SSH packets, not many small ones.
        """
        try:
            first = os.read(self.master, size)
        except OSError:  # EIO on Linux once the slave side is closed everywhere
            return b""
        if not first or len(first) >= size:
            return first
        chunks, total = [first], len(first)
        try:
            while total < size and select.select([self.master], [], [], 0)[0]:
                more = os.read(self.master, size - total)
                if not more:
                    break
                chunks.append(more)
                total += len(more)
        except OSError:
            pass  # the end shows up on the next read
        return first if len(chunks) == 1 else b"".join(chunks)

    def readable(self, timeout: float) -> bool:
        """True when output (or the end) is waiting, within ``timeout`` seconds; False after an end() too."""
        try:
            return bool(select.select([self.master], [], [], timeout)[0])
        except (OSError, ValueError):
            return False

    def write(self, data: bytes | memoryview) -> None:
        """Send ``data`` as keystrokes to the shell."""
        view = memoryview(data)
        while view:
            written = os.write(self.master, view)
            view = view[written:]

    def resize(self, cols: int, rows: int) -> None:
        """Tell the terminal its new size (the shell gets SIGWINCH)."""
        cols, rows = max(1, min(cols, 10000)), max(1, min(rows, 10000))
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def size(self) -> tuple[int, int]:
        """(cols, rows) as the terminal has them now."""
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(self.master, termios.TIOCGWINSZ, b"\0" * 8))
        return cols, rows


def start_terminal(
    argv: Sequence[str] | None = None,
    *,
    cols: int = 80,
    rows: int = 24,
    term: str = "xterm-256color",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    raw: bool = False,
) -> Terminal:
    """Start ``argv`` (default: the user's login shell, as a login shell) in a new PTY of ``cols`` x ``rows``.

    ``env`` replaces the environment built by :func:`shell_environment`; the working
    directory is the user's home unless ``cwd`` says otherwise. ``raw`` turns off echo
    and line translation, for a command whose output must arrive byte for byte.
    """
    _require_posix()
    shell = login_shell()
    if argv is None:
        executable, args = shell, ["-" + os.path.basename(shell)]  # a leading dash makes a login shell
    else:
        executable, args = argv[0], list(argv)
    environment = dict(env) if env is not None else shell_environment(shell, term)
    master, slave = os.openpty()
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if raw:
            tty.setraw(slave)
        directory = cwd or Path(environment.get("HOME") or "/")
        if not directory.is_dir():
            directory = Path("/")
        process = subprocess.Popen(
            args,
            executable=executable,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=directory,
            env=environment,
            start_new_session=True,
            preexec_fn=_take_terminal,
            close_fds=True,
        )
    except OSError as exc:
        os.close(master)
        raise ConfigError(f"The shell {executable} could not be started: {exc.strerror or exc}.") from exc
    finally:
        os.close(slave)
    os.set_inheritable(master, False)
    return Terminal(process, master)




# A pipe holds 64 KiB unless asked for more; a larger one lets a bulk copy move in
# large blocks (Linux only, capped by /proc/sys/fs/pipe-max-size; elsewhere the default stays).
PIPE_SIZE = 1 << 20


def _widen(fd: int) -> None:
    setting = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setting is None:
        return
    try:
        fcntl.fcntl(fd, setting, PIPE_SIZE)
    except OSError:
        pass  # over the system's limit: the default size still works


class Piped(_SessionProcess):
    """A command running in its own session with three pipes: input written here, output and errors read apart.

    Each of :meth:`read` and :meth:`read_errors` belongs to one reader thread, which
    reads until b"" (that closes the pipe's end here); :meth:`end` ends every process
    of the command's session, so whatever still held the pipes lets go of them and
    the readers see their end. Closing the output pipes from another thread while a
    read waits on them could hand the read another file that took the same number,
    so only the readers close them.
    """

    def __init__(self, process: subprocess.Popen, stdin: int, stdout: int, stderr: int):
        super().__init__(process)
        self._fds = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
        self._fd_lock = threading.Lock()

    def _release(self, name: str) -> None:
        with self._fd_lock:
            fd = self._fds[name]
            self._fds[name] = -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def _read(self, name: str, size: int) -> bytes:
        fd = self._fds[name]
        if fd < 0:
            return b""
        try:
            data = os.read(fd, size)
        except OSError:
            data = b""
        if not data:
            self._release(name)
        return data

    def read(self, size: int = 256 << 10) -> bytes:
        """Up to ``size`` bytes of the command's output; b"" once every process holding its output is gone."""
        return self._read("stdout", size)

    def read_errors(self, size: int = 256 << 10) -> bytes:
        """Up to ``size`` bytes of the command's error output; b"" at its end."""
        return self._read("stderr", size)

    def write(self, data: bytes | memoryview) -> None:
        """Send ``data`` to the command's input; OSError (BrokenPipeError) once the command no longer reads it."""
        fd = self._fds["stdin"]
        if fd < 0:
            raise BrokenPipeError("the command's input is closed")
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def close_input(self) -> None:
        """The end of input: the command reads end-of-file."""
        self._release("stdin")

    def _close_fds(self) -> None:
        self._release("stdin")


def start_piped(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None) -> Piped:
    """Start ``argv`` in a new session with its input, output and errors on three separate pipes, no terminal.

    The working directory is the user's home (``env["HOME"]``) unless ``cwd`` says otherwise.
    """
    _require_posix()
    parent_ends: list[int] = []
    child_ends: list[int] = []
    try:
        for reading_child in (True, False, False):  # stdin, stdout, stderr
            read_end, write_end = os.pipe()
            _widen(write_end)
            child, parent = (read_end, write_end) if reading_child else (write_end, read_end)
            child_ends.append(child)
            parent_ends.append(parent)
        directory = cwd or Path(env.get("HOME") or "/")
        if not directory.is_dir():
            directory = Path("/")
        process = subprocess.Popen(
            list(argv),
            stdin=child_ends[0],
            stdout=child_ends[1],
            stderr=child_ends[2],
            cwd=directory,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        for fd in parent_ends:
            os.close(fd)
        raise ConfigError(f"The command {argv[0]} could not be started: {exc.strerror or exc}.") from exc
    finally:
        for fd in child_ends:
            os.close(fd)
    return Piped(process, *parent_ends)
