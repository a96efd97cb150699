"""A share's gathering in a process of its own, on a core of its own.

Collecting, redacting and bundling are Python work that holds the interpreter's
lock; a thread of the command could only take turns with the command's own work
(loading the CLI and the server's client, asking the server about the ticket,
the questions). A second process does it beside them: `helpline` starts it
(:func:`spawn_early`) as soon as it knows the command is a share, before the
CLI itself is loaded, so that the process loads the gathering's code while the
command parses its options; :class:`Gathering` then hands it the request.

The two speak JSON, one message a line, over the worker's stdin and stdout
(see :mod:`agent.share_worker`). The command says what to gather and, once the
person has answered, what the bundle says of the ticket and the answers
(``settle``), or that it is stopped (``cancel``, or its end of the pipe closing,
whatever the reason: a worker never outlives the command that asked for it).
The worker tells each collector's progress, then the finished bundle or the
error, and removes the unredacted staging folder before it ends. It runs in a
session of its own: the person's Ctrl-C reaches the command, which stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.share import PreparedBundle, ShareRequest

#: The module a gathering process runs.
WORKER_MODULE = "agent.share_worker"

_EARLY: list[subprocess.Popen] = []


def worker_argv() -> list[str]:
    """How a gathering process is started: this interpreter with its -X options (``-X importtime`` shows both
    processes' imports), never the current folder first on its path (-P)."""
    options = [f"-X{name}" if value is True else f"-X{name}={value}" for name, value in sys._xoptions.items()]
    return [sys.executable, *options, "-P", "-m", WORKER_MODULE]


def spawn_worker() -> subprocess.Popen:
    """Start a gathering process; it loads its code and waits for a request on its stdin."""
    kwargs: dict[str, Any] = {}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        kwargs["start_new_session"] = True  # the terminal's Ctrl-C is the command's; the command stops the worker
    return subprocess.Popen(worker_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
                            close_fds=True, **kwargs)


def spawn_early() -> None:
    """Start the gathering process of this share now (see the module's notes); :class:`Gathering` takes it."""
    try:
        _EARLY[:] = [spawn_worker()]
    except OSError:  # no process could be started now: Gathering tries again, and says why if it fails too
        _EARLY.clear()


def _early_or_new() -> subprocess.Popen:
    early = _EARLY.pop() if _EARLY else None
    if early is not None and early.poll() is None:
        return early
    return spawn_worker()


def read_messages(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
    """The messages on ``stream`` (JSON objects, one a line) until it ends; a line that is not one is skipped."""
    for line in stream:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            yield message


def write_message(stream: IO[bytes], message: dict[str, Any]) -> bool:
    """Write ``message`` to ``stream`` as one JSON line; False if the other end is gone (closed or broken)."""
    try:
        stream.write(json.dumps(message).encode("utf-8") + b"\n")
        stream.flush()
    except (ValueError, OSError):
        return False
    return True


class Gathering:
    """A share's gathering in its own process, started before the questions.

    The collectors work while the person types their answers; what the bundle
    says of the ticket and the answers is settled last: :meth:`result` sends the
    request as it is then, and replays the progress so far to its listener.
    :meth:`cancel` stops it and removes what it wrote.
    """

    #: Seconds :meth:`cancel` waits for the gathering to remove what it wrote.
    CANCEL_WAIT = 10.0

    def __init__(self, request: ShareRequest, *, work_root: Path | None = None):
        from agent.share import new_work_folder

        self.request = request
        self._lock = threading.Lock()
        self._events: list[tuple[str, str]] = []
        self._listener: Callable[[str, str], None] | None = None
        self._outcome: dict[str, Any] | None = None
        self._ended = threading.Event()
        self._work = new_work_folder(work_root)
        try:
            self._process = _early_or_new()
        except OSError as exc:
            shutil.rmtree(self._work, ignore_errors=True)
            from protocol.errors import HelplineError

            raise HelplineError(f"Could not start gathering the diagnostics: {exc.strerror or exc}.") from None
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to_worker: IO[bytes] = self._process.stdin
        self._send({"request": request.to_dict(), "work": str(self._work)})
        from agent.share import start_deaf_to_ctrl_c

        self._reader = threading.Thread(target=self._read, args=(self._process.stdout,), name="share-gathering",
                                        daemon=True)
        start_deaf_to_ctrl_c(self._reader)

    def _send(self, message: dict[str, Any]) -> None:
        write_message(self._to_worker, message)  # if it ended, what it said (or did not) tells why

    def _read(self, stream: IO[bytes]) -> None:
        try:
            for message in read_messages(stream):
                if isinstance(message.get("progress"), list) and len(message["progress"]) == 2:
                    name, status = (str(part) for part in message["progress"])
                    with self._lock:
                        self._events.append((name, status))
                        listener = self._listener
                    if listener is not None:
                        listener(name, status)
                elif "done" in message or "error" in message:
                    self._outcome = message
                    break
        finally:
            self._ended.set()

    def result(self, progress: Callable[[str, str], None] | None = None) -> PreparedBundle:
        """Finish the bundle with the request as it is now and return it (an error of the gathering is raised here).

        ``progress`` hears of every collector so far, then of the rest as they end.
        """
        with self._lock:
            self._listener = progress
            past = list(self._events)
        if progress is not None:
            for name, status in past:
                progress(name, status)
        self._send({"settle": self.request.to_dict()})
        self._ended.wait()
        outcome = self._outcome
        if outcome is None or "done" not in outcome:
            self._process.wait()
            shutil.rmtree(self._work, ignore_errors=True)
            raise _error_from(outcome["error"] if outcome else None, self._process.returncode)
        from agent.bundle.result import BundleResult
        from agent.share import PreparedBundle

        done = outcome["done"]
        return PreparedBundle(Path(done["work_dir"]), None, BundleResult.from_dict(done["bundle"]),
                              Path(done["archive"]), int(done["size"]), str(done["sha256"]), _Ends(self._process))

    def cancel(self) -> None:
        """Stop gathering and wait (at most :data:`CANCEL_WAIT` seconds) until what it wrote is removed.

        On a PC too busy for the gathering to stop in time, the process is killed and its work
        folder removed from here.
        """
        self._send({"cancel": True})
        try:
            self._to_worker.close()
        except OSError:
            pass
        try:
            self._process.wait(self.CANCEL_WAIT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self._work, ignore_errors=True)


class _Ends:
    """The gathering process as the bundle's background removal: it removes the staging folder, then ends."""

    def __init__(self, process: subprocess.Popen):
        self._process = process

    def join(self, timeout: float | None = None) -> None:
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def _error_from(error: dict[str, Any] | None, returncode: int | None) -> BaseException:
    """The exception a gathering process reported (the same class when it is one of Helpline's errors)."""
    from protocol import errors

    if not error:
        return errors.HelplineError(f"Gathering the diagnostics stopped unexpectedly (status {returncode}).",
                                    hint="Try again; if it happens again, save the bundle with --output and tell your support team.")
    kind = getattr(errors, str(error.get("type")), None)
    if not (isinstance(kind, type) and issubclass(kind, errors.HelplineError)):
        kind = errors.HelplineError
    try:
        exc = kind(str(error.get("message")), hint=error.get("hint"))
    except TypeError:
        exc = errors.HelplineError(str(error.get("message")), hint=error.get("hint"))
    if isinstance(error.get("status"), int):
        try:
            exc.status = errors.ExitStatus(error["status"])
        except ValueError:
            pass
    return exc
