"""The gathering process of a share: ``python -P -m agent.share_worker`` (see :mod:`agent.gathering`).

It takes the first CPU reading of the share as it starts (the processes
collector measures CPU use from there), loads the gathering's code, then reads
JSON messages a line each from its stdin:

- ``{"request": {...}, "work": "<folder>"}``: gather into that work folder;
- ``{"settle": {...}}``: the request as it is once the person answered (the
  bundle is finished with it);
- ``{"cancel": true}``, or the end of stdin: stop, remove what was written, end.

It writes ``{"progress": [collector, status]}`` as collectors end, then
``{"done": {...}}`` (the packed bundle) or ``{"error": {...}}`` (one of
Helpline's errors: its class, message, hint and status), and ends once the
unredacted staging folder is gone. Nothing else is written to its stdout: what
the code it runs prints goes to stderr.
"""

from __future__ import annotations

import sys

# The gathering hashes a few hundred kilobytes (SHA-256 of each file and of the archive): Python's own
# implementation does that in milliseconds, and leaving OpenSSL's library unloaded keeps about 4 MB off the PC's
# memory while the share runs. (hashlib falls back to its own algorithms when _hashlib is not there.)
sys.modules.setdefault("_hashlib", None)  # type: ignore[arg-type]

import json  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
from typing import IO, Any  # noqa: E402


def _control() -> tuple[IO[bytes], IO[bytes]]:
    """The pipes to the command, moved off stdin and stdout: a command a collector runs reads an empty stdin
    and anything printed goes to stderr, never into the messages."""
    incoming = os.fdopen(os.dup(0), "rb")
    outgoing = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return incoming, outgoing


def _error(exc: BaseException) -> dict[str, Any]:
    from protocol.errors import HelplineError

    if isinstance(exc, HelplineError):
        return {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint, "status": int(exc.status)}
    return {"type": "HelplineError", "message": f"Gathering the diagnostics failed: {type(exc).__name__}: {exc}",
            "hint": None, "status": None}


def run() -> int:
    """Serve one share's gathering; the exit status is 0 when a bundle was made or nothing was asked."""
    from agent.diagnostics.cpu_sample import CpuSample

    sample = CpuSample()  # first, before the code loads: the interval passes while it does
    incoming, outgoing = _control()
    import gc

    gc.disable()  # as `helpline share` does (see cli.main): collecting and redacting make few reference cycles
    # The gathering's code, loaded while the command parses its options and asks the server about the ticket.
    import agent.bundle.build  # noqa: F401 - with the collectors, the redactor and the archive code
    from agent.diagnostics import collect  # noqa: F401 - through the package, which keeps the name for the function
    from agent.gathering import read_messages, write_message
    from agent.share import ShareRequest, prepare

    first = incoming.readline()
    if not first:
        return 0  # the command did not need a gathering after all (help, an error, nothing to gather)
    message = json.loads(first)
    request = ShareRequest.from_dict(message["request"])
    from pathlib import Path

    work = Path(message["work"])
    write_lock = threading.Lock()
    settled = threading.Event()
    cancelled = threading.Event()

    def send(body: dict[str, Any]) -> None:
        with write_lock:
            if not write_message(outgoing, body):
                cancelled.set()  # the command is gone: nobody wants the bundle

    def listen() -> None:
        for message in read_messages(incoming):
            if "settle" in message:
                fresh = ShareRequest.from_dict(message["settle"])
                for name in ("what", "since", "tried", "ticket", "ticket_title", "new_ticket"):
                    setattr(request, name, getattr(fresh, name))
                settled.set()
            elif message.get("cancel"):
                break
        cancelled.set()  # a cancel, or the command's end of the pipe closed
        settled.set()

    threading.Thread(target=listen, name="share-control", daemon=True).start()

    def wait_until_settled(_request: ShareRequest) -> None:
        settled.wait()
        if cancelled.is_set():
            from agent.diagnostics.collect import CollectionCancelled

            raise CollectionCancelled("the share was stopped")

    try:
        prepared = prepare(request, progress=lambda name, status: send({"progress": [name, status]}), work=work,
                           cpu_sample=sample, settle=wait_until_settled, cancelled=cancelled)
    except BaseException as exc:  # noqa: BLE001 - told to the command, which raises it there
        if not cancelled.is_set():
            send({"error": _error(exc)})
        return 1
    if cancelled.is_set():
        prepared.discard()
        return 0
    send({"done": {"work_dir": str(prepared.work_dir), "bundle": prepared.bundle.to_dict(),
                   "archive": str(prepared.archive), "size": prepared.size, "sha256": prepared.sha256}})
    if prepared.removal is not None:
        prepared.removal.join()  # the unredacted staging goes before this process ends (the command waits for it)
    return 0


if __name__ == "__main__":
    # The command waits for this process (its staging folder is gone by then), not for the interpreter to take
    # apart every object the gathering loaded.
    from agent.process_end import end_process

    end_process(run())
