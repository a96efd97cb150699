"""A share's redaction and bundling in a process of their own, beside the collectors.

A share's own work is mostly Python on one interpreter lock, and most of it is
the redactor's: loading it (compiling its patterns), scrubbing every collected
file and the final check's reading of them. `helpline share` starts this worker
as it begins (:meth:`BundleWorker.start`), so the redactor loads on another core
while the command loads the collectors and asks the server about the ticket; the
share then builds its bundle with the worker's redactor (:class:`RemoteRedactor`),
and only the redactor (not the bundle's code, nor its models) is loaded twice.

The worker is this module run by the same interpreter (``python -P -m
agent.bundle_worker``: the working directory is not on its import path). It reads
requests on its standard input and answers each on its standard output, in order,
as length-prefixed pickles; only the `helpline` process that started it holds
those pipes. It ignores Ctrl-C (the share decides what an interruption stops) and
ends when its input closes, so it never outlives the share. Where it cannot
start, the share does the same work in its own process
(:class:`agent.share.BundleTools`).
"""

from __future__ import annotations

import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from protocol.errors import HelplineError

if TYPE_CHECKING:
    from agent.redaction.outcomes import FileRedaction, Finding

_LENGTH = struct.Struct("!Q")
#: Seconds :meth:`BundleWorker.close` waits for the worker to end before it is killed.
CLOSE_WAIT = 5.0


class WorkerStopped(HelplineError):
    """The worker ended or broke its pipe before answering."""


def _write(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read(stream: IO[bytes]) -> Any:
    """The next message, or raise EOFError when the stream ends (cleanly or not) before one is whole."""
    head = _read_exactly(stream, _LENGTH.size)
    if head is None:
        raise EOFError
    body = _read_exactly(stream, _LENGTH.unpack(head)[0])
    if body is None:
        raise EOFError
    return pickle.loads(body)  # noqa: S301 - the other end is this program, started by (or starting) it


def _rebuilt(value: tuple[BaseException, dict[str, Any]]) -> BaseException:
    exc, state = value
    vars(exc).update(state)
    return exc


def _portable(exc: BaseException) -> tuple[BaseException, dict[str, Any]]:
    """``exc`` and its attributes (a HelplineError's hint and status), as they can cross the pipe."""
    try:
        state = dict(vars(exc))
        pickle.loads(pickle.dumps((exc, state)))  # noqa: S301 - our own bytes
        return exc, state
    except Exception:  # noqa: BLE001 - an error that does not pickle is told in words
        return RuntimeError(f"{type(exc).__name__}: {exc}"), {}


# --- the worker's side ------------------------------------------------------------------------------


#: What the share may ask of the worker's redactor: its methods, and the pseudonym map's version.
REDACTOR_METHODS = frozenset({"redact_text", "redact_document", "redact_file", "check_early", "verify_tree", "flags",
                              "kinds_checked", "pseudonyms_version"})


class _Serve:
    """The worker's state: the redactor the first request makes."""

    def __init__(self) -> None:
        self.redactor: Any = None

    def make(self, settings: Mapping[str, Any]) -> None:
        from agent.redaction.options import RedactionOptions
        from agent.redaction.redactor import Redactor

        self.redactor = Redactor(RedactionOptions(**settings))

    def redactor_call(self, method: str, args: tuple[Any, ...]) -> Any:
        if method not in REDACTOR_METHODS:
            raise ValueError(f"the redactor has no method {method!r} for the share")
        if self.redactor is None:
            raise RuntimeError("the worker's redactor was not made yet")
        if method == "pseudonyms_version":
            return self.redactor.pseudonyms.version
        return getattr(self.redactor, method)(*args)


def serve(requests: IO[bytes], answers: IO[bytes]) -> int:
    """Answer requests until ``requests`` ends; return the exit status (0)."""
    state = _Serve()
    handlers = {"make": state.make, "redactor": state.redactor_call}
    while True:
        try:
            operation, args = _read(requests)
        except EOFError:
            return 0
        try:
            _write(answers, ("ok", handlers[operation](*args)))
        except BrokenPipeError:
            return 0
        except BaseException as exc:  # noqa: BLE001 - every error goes back to the share, which tells it
            _write(answers, ("error", _portable(exc)))


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the share, which closes our input
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers may reach the share's pipe
    sys.stdin = None  # type: ignore[assignment]
    try:
        # Loaded before the first request comes (compiling the patterns is most of it): this is the work done
        # while the share loads the collectors.
        import agent.redaction.redactor  # noqa: F401
    except Exception:  # noqa: BLE001 - the first request then fails with the error, and the share tells it
        pass
    return serve(requests, answers)


# --- the share's side --------------------------------------------------------------------------------


class BundleWorker:
    """The share's end of a worker: requests are answered in order, one caller at a time.

    :meth:`post` sends a request without waiting for its answer; :meth:`call` sends
    one and returns its answer, reading the answers to earlier posts first. An error
    met by a posted request is raised by every call after it (what follows depends
    on it); an error met by a called request is raised by that call; both as they
    were raised in the worker. A worker that ends or breaks its pipe raises
    :class:`WorkerStopped`.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self._lock = threading.Lock()
        self._posted = 0  # posted requests whose answers were not read yet
        self._posted_error: BaseException | None = None
        self._broken: WorkerStopped | None = None
        self._asked = False  # whether any request was sent

    @classmethod
    def start(cls) -> BundleWorker | None:
        """Start the worker; None where it cannot start (the share then does the work itself)."""
        # -P: the working directory is not on the worker's import path (the share's own packages are, on the
        # interpreter's path or PYTHONPATH as the share found them).
        argv = [sys.executable, "-P", "-m", __name__]
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       close_fds=True)
        except (OSError, ValueError):
            return None
        return cls(process)

    @property
    def pid(self) -> int:
        return self._process.pid

    def post(self, operation: str, *args: Any) -> None:
        with self._lock:
            self._send(operation, args)
            self._posted += 1

    def call(self, operation: str, *args: Any) -> Any:
        with self._lock:
            self._send(operation, args)
            self._read_posted()
            kind, value = self._receive()
            if self._posted_error is not None:
                raise self._posted_error
            if kind == "error":
                raise _rebuilt(value)
            return value

    def _read_posted(self) -> None:
        while self._posted:
            kind, value = self._receive()
            self._posted -= 1
            if kind == "error" and self._posted_error is None:
                self._posted_error = _rebuilt(value)

    def _send(self, operation: str, args: tuple[Any, ...]) -> None:
        if self._broken is not None:
            raise self._broken
        self._asked = True
        try:
            _write(self._process.stdin, (operation, args))  # type: ignore[arg-type]
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise self._stopped() from exc

    def _receive(self) -> tuple[str, Any]:
        try:
            return _read(self._process.stdout)  # type: ignore[arg-type]
        except (EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
            raise self._stopped() from exc

    def _stopped(self) -> WorkerStopped:
        status = self._process.poll()
        how = f"exit status {status}" if status is not None else "its pipe broke"
        self._broken = WorkerStopped(f"The process redacting the bundle stopped ({how}); nothing was sent.",
                                     hint="Run the share again; if it happens again, run it with --debug.")
        return self._broken

    def close(self) -> None:
        """End the worker (it ends when its input closes) and wait for it; kill it if it does not end.

        A worker never asked anything (the share stopped before it gathered) is
        stopped at once: it may still be loading, and has nothing to finish.
        """
        if not self._asked and self._process.poll() is None:
            self._process.terminate()
        for stream in (self._process.stdin, self._process.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass
        try:
            self._process.wait(timeout=CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class RemoteRedactor:
    """A :class:`~agent.redaction.Redactor` in a worker: what a share's collection and bundle ask of one.

    Each method is the redactor's own, done in the worker, in the order asked;
    ``pseudonyms.version`` is the worker's pseudonym map's.
    """

    def __init__(self, worker: BundleWorker) -> None:
        self._worker = worker
        self.pseudonyms = _RemotePseudonyms(worker)

    def _ask(self, method: str, *args: Any) -> Any:
        return self._worker.call("redactor", method, args)

    def redact_text(self, text: str) -> tuple[str, dict[str, int]]:
        return self._ask("redact_text", text)

    def redact_document(self, document: Any) -> tuple[Any, dict[str, int]]:
        return self._ask("redact_document", document)

    def redact_file(self, src: Path, dst: Path, relpath: str | None = None) -> FileRedaction:
        return self._ask("redact_file", src, dst, relpath)

    def check_early(self, path: Path) -> None:
        self._ask("check_early", path)

    def verify_tree(self, root: Path) -> list[Finding]:
        return self._ask("verify_tree", root)

    def flags(self, texts: Iterable[str]) -> dict[str, str]:
        return self._ask("flags", list(texts))

    def kinds_checked(self) -> int:
        return self._ask("kinds_checked")


class _RemotePseudonyms:
    def __init__(self, worker: BundleWorker) -> None:
        self._worker = worker

    @property
    def version(self) -> int:
        return self._worker.call("redactor", "pseudonyms_version", ())


_EARLY: list[BundleWorker] = []


def start_early() -> None:
    """Start a worker now for the share this process is about to make (`helpline` does as it starts a share).

    It loads the redactor while the command loads; a process that never takes it
    (an error in the options) ends, and the worker ends with its input.
    """
    worker = BundleWorker.start()
    _EARLY[:] = [worker] if worker is not None else []


def early_or_new() -> BundleWorker | None:
    """The worker :func:`start_early` started (handed out once), else one started now (None: none can start)."""
    return _EARLY.pop() if _EARLY else BundleWorker.start()


if __name__ == "__main__":
    sys.exit(main())
