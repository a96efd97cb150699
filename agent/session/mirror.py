"""The user's live view of a session: their terminal mirrors the shell, shows a banner, and holds the end key.

While a session is live the user's terminal is in raw mode: what the shell shows is
written to it, what the user types goes to the shell (the user can always type,
whatever the engineer's scope), except three keys that are the user's own:

- ``Ctrl-]`` ends the session at once (always, in every mode);
- ``Ctrl-T`` opens a chat line to the engineer (Enter sends, Esc cancels);
- ``Ctrl-O`` opens a menu to take a permission back (control, files, forward).

On a terminal the top line is reserved for a banner (who is connected, the
scopes, the time left, the keys, the engineer's last message), kept by a scroll
region and redrawn every second, and the window title says the same. Closing the
terminal (SIGHUP) or SIGTERM ends the session too.

The shell's output reaches the user's terminal minus what would make that terminal
answer or act beyond the screen: status and identity queries (their answers would
arrive as keystrokes from the user), title and clipboard sequences, device control
strings. So the engineer cannot type through the user's terminal, nor overwrite the
title that carries the banner. Nothing here prints: it writes to the file
descriptors it is given.
"""

from __future__ import annotations

import os
import re
import select
import signal
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from protocol.grants import Scope
from protocol.times import duration
from protocol.untrusted import printable

if os.name != "nt":
    import fcntl
    import termios
    import tty

END_KEY = b"\x1d"  # Ctrl-]
CHAT_KEY = b"\x14"  # Ctrl-T
SCOPE_KEY = b"\x0f"  # Ctrl-O
KEYS_HELP = "Ctrl-] end now · Ctrl-T message · Ctrl-O take a permission back"
#: How long an engineer's message stays in the banner.
MESSAGE_SECONDS = 30.0
REDRAW_SECONDS = 1.0
#: The longest escape sequence held back while waiting for its end; longer ones are dropped.
MAX_PENDING = 8192

#: Keys of the take-back menu, and what each takes back.
TAKE_BACK_KEYS = {"c": Scope.CONTROL, "f": Scope.FILES, "p": Scope.FORWARD}
SCOPE_WORDS = {
    Scope.VIEW: "see what your shell shows",
    Scope.CONTROL: "type and run commands in your shell, as you",
    Scope.FILES: "copy files to and from this PC (your files)",
    Scope.FORWARD: "reach services on this PC (port forwarding)",
}
SHORT_SCOPE = {Scope.VIEW: "view", Scope.CONTROL: "control", Scope.FILES: "files", Scope.FORWARD: "forward"}

# Sequences the mirror does not pass on: queries a terminal answers on its input (device status and
# attributes, window reports, mode and setting requests, XTVERSION), OSC (titles, clipboard, colour
# queries), device control strings and other strings, DECID, and ENQ (answerback).
_DROP = re.compile(
    rb"\x1b\[[\x30-\x3f]*[\x20-\x2f]*[nct]"  # DSR, DA1/2/3, window ops and reports
    rb"|\x1b\[[\x30-\x3f]*\$p"  # DECRQM
    rb"|\x1b\[>[\x30-\x3f]*q"  # XTVERSION
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC ... BEL or ST
    rb"|\x1b[PX^_][\s\S]*?\x1b\\"  # DCS, SOS, PM, APC ... ST
    rb"|\x1bZ|\x05"
)
# An escape sequence cut off at the end of a chunk: held back until the next one completes it.
_INCOMPLETE = re.compile(rb"\x1b(?:\[[\x30-\x3f]*[\x20-\x2f]*|\][^\x07\x1b]*\x1b?|[PX^_](?:(?!\x1b\\)[\s\S])*\x1b?|)\Z")
# Sequences after which the banner's scroll region is set again: region changes, resets, screen switches.
_LAYOUT = re.compile(rb"\x1b\[[0-9;]*r|\x1bc|\x1b\[\?(?:1049|1047|47)[hl]")


class OutputFilter:
    """Removes, from a stream of terminal output, what would make the viewer's terminal answer or act off-screen."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        data = self._carry + data
        self._carry = b""
        cut = _INCOMPLETE.search(data)
        if cut is not None and len(data) - cut.start() <= MAX_PENDING:
            data, self._carry = data[: cut.start()], data[cut.start():]
        elif cut is not None:  # an unending string: drop it rather than hold the view
            data = data[: cut.start()]
        return _DROP.sub(b"", data)


def scope_list(scopes: frozenset[Scope] | set[Scope]) -> str:
    return "+".join(SHORT_SCOPE[s] for s in (Scope.VIEW, Scope.CONTROL, Scope.FILES, Scope.FORWARD) if s in scopes)


def _size(fd: int) -> tuple[int, int]:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return 80, 24
    return (cols or 80), (rows or 24)


class Mirror:
    """The user's terminal during a live session (see the module's description).

    ``live`` is the :class:`agent.session.offer.LiveSession` (anything with ``end``,
    ``send_chat``, ``take_back``, ``host.scopes``, ``seconds_left``, ``ended``);
    ``engineer`` is who the banner names. ``banner`` draws the banner line and title
    (only on a terminal). ``on_problem`` hears errors of chat and scope changes.
    """

    def __init__(self, live: Any, *, engineer: str, account: str = "", stdin_fd: int = 0, stdout_fd: int = 1, banner: bool | None = None,
                 on_problem: Callable[[str], None] | None = None):
        self.live = live
        self.engineer = printable(engineer, multiline=False)
        self.account = printable(account, multiline=False)
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.banner = os.isatty(stdout_fd) if banner is None else banner
        self.on_problem = on_problem
        self._filter = OutputFilter()
        self._lock = threading.Lock()
        self._mode = "shell"  # or "chat", "scopes"
        self._chat = ""
        self._message: tuple[float, str] | None = None
        self._status = f"waiting for {self.engineer} to connect"
        self._cols, self._rows = _size(stdout_fd) if self.banner else (80, 24)
        self._wake_r, self._wake_w = os.pipe()
        self._saved_tty: list | None = None
        self._old_handlers: dict[int, Any] = {}
        self._layout_due = False
        self._stop_reason: str | None = None  # set by a signal; the loop ends the session
        self._closed = False

    # Called from other threads.

    def output(self, data: bytes) -> None:
        """Bytes the shell showed: mirrored to the user's terminal (from the session's output thread)."""
        shown = self._filter.feed(data)
        with self._lock:
            self._write(shown)
            if self.banner and _LAYOUT.search(shown):
                self._write(self._region())
                self._write(self._banner_bytes())

    def notice(self, line: str) -> None:
        """A line of Helpline's own among the output (connected, verification string), made printable."""
        text = printable(line, multiline=False)
        with self._lock:
            self._write(f"\r\n\x1b[1m[helpline]\x1b[0m {text}\r\n".encode())

    def connected(self, verification: str, username: str) -> None:
        """The engineer's key authenticated: show who, and the verification string both sides see."""
        self._status = "connected"
        who = f"{self.engineer} (account {self.account})" if self.account else self.engineer
        self.notice(f"{who} is connected with the key the grant names. Verification: {verification} — your engineer "
                    "sees the same string; check it with them if you are on the phone.")
        self.redraw()

    def message(self, name: str, text: str) -> None:
        """A chat message from the engineer: shown in the banner (and as a line without one), with a bell."""
        shown = f"{printable(name, multiline=False)}: {printable(text, multiline=False)}"
        self._message = (time.monotonic(), shown)
        if self.banner:
            with self._lock:
                self._write(b"\x07")
            self.redraw()
        else:
            self.notice(f"message from {shown}")

    def ended(self, reason: str) -> None:
        """The session ended (any thread): wake the loop so it restores the terminal."""
        if self._closed:
            return
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # The loop, on the main thread.

    def run(self) -> None:
        """Mirror until the session ends; the terminal is put back as it was whatever happens."""
        self._enter()
        try:
            next_redraw = 0.0
            while not self.live.ended:
                if self._stop_reason is not None:
                    self.live.end(self._stop_reason)
                    break
                now = time.monotonic()
                if now >= next_redraw or self._layout_due:
                    self.redraw()
                    next_redraw = now + REDRAW_SECONDS
                try:
                    ready = select.select([self.stdin_fd, self._wake_r], [], [], REDRAW_SECONDS)[0]
                except InterruptedError:
                    continue
                if self._wake_r in ready:
                    os.read(self._wake_r, 64)
                if self.stdin_fd in ready:
                    try:
                        data = os.read(self.stdin_fd, 4096)
                    except OSError:
                        data = b""
                    if not data:
                        self.live.end("the terminal was closed")
                        break
                    self.keys(data)
        finally:
            self._leave()

    def keys(self, data: bytes) -> None:
        """What the user typed: the session's own keys act, the rest goes to the shell (or the chat line)."""
        while data:
            if self._mode == "shell":
                cut = min((i for i in (data.find(END_KEY), data.find(CHAT_KEY), data.find(SCOPE_KEY)) if i >= 0), default=-1)
                if cut < 0:
                    self.live.host.user_input(data)
                    return
                if cut:
                    self.live.host.user_input(data[:cut])
                key, data = data[cut:cut + 1], data[cut + 1:]
                if key == END_KEY:
                    self.live.end("the user ended the session")
                    return
                self._mode = "chat" if key == CHAT_KEY else "scopes"
                self._chat = ""
                self.redraw()
                continue
            key, data = data[:1], data[1:]
            if key == END_KEY:
                self.live.end("the user ended the session")
                return
            if self._mode == "chat":
                self._chat_key(key)
            else:
                self._scope_key(key)

    def _chat_key(self, key: bytes) -> None:
        if key in (b"\r", b"\n"):
            text, self._mode, self._chat = self._chat.strip(), "shell", ""
            if text:
                try:
                    self.live.send_chat(text)
                    self._message = (time.monotonic(), f"you: {text}")
                except Exception as exc:  # a failed message must not end the session
                    self._problem(f"the message was not sent: {getattr(exc, 'message', exc)}")
        elif key in (b"\x1b", b"\x03"):
            self._mode, self._chat = "shell", ""
        elif key in (b"\x7f", b"\x08"):
            self._chat = self._chat[:-1]
        elif key >= b" " and key != b"\x7f":
            if len(self._chat) < 2000:
                self._chat += key.decode("latin-1") if key < b"\x80" else ""
        self.redraw()

    def _scope_key(self, key: bytes) -> None:
        self._mode = "shell"
        scope = TAKE_BACK_KEYS.get(key.decode("latin-1").lower())
        if scope is not None and scope in self.live.host.scopes:
            try:
                left = self.live.take_back(scope)
                self.notice(f"You took back '{SHORT_SCOPE[scope]}'. The engineer keeps: {scope_list(left)}.")
            except Exception as exc:
                self._problem(f"the permission was not taken back: {getattr(exc, 'message', exc)}")
        self.redraw()

    def _problem(self, text: str) -> None:
        if self.on_problem is not None:
            self.on_problem(text)
        self.notice(text)

    # Drawing.

    def banner_text(self) -> str:
        """The banner line's text as it reads now."""
        if self._mode == "chat":
            return f" Message to {self.engineer}: {self._chat}_   (Enter send · Esc cancel)"
        if self._mode == "scopes":
            held = [f"[{k}] {SHORT_SCOPE[s]}" for k, s in TAKE_BACK_KEYS.items() if s in self.live.host.scopes]
            if not held:
                return " Only 'view' is left: Ctrl-] ends the session.   (any key: back)"
            return " Take back: " + "  ".join(held) + "   (any other key: cancel · Ctrl-] end the session)"
        left = duration(self.live.seconds_left())
        head = f" Helpline session · {self.engineer} · {self._status} · {scope_list(self.live.host.scopes)} · {left} left · "
        if self._message is not None and time.monotonic() - self._message[0] < MESSAGE_SECONDS:
            return head + self._message[1]
        return head + KEYS_HELP

    def _banner_bytes(self) -> bytes:
        text = self.banner_text()[: max(1, self._cols - 1)]
        title = printable(self.banner_text(), multiline=False)[:200]
        return (f"\x1b7\x1b[1;1H\x1b[2K\x1b[7m{text}\x1b[0m\x1b8"
                f"\x1b]2;{title}\x07").encode("utf-8", "replace")

    def _region(self) -> bytes:
        # Setting a region homes the cursor: save and restore it around.
        return f"\x1b7\x1b[2;{self._rows}r\x1b8".encode()

    def redraw(self) -> None:
        if not self.banner:
            return
        with self._lock:
            if self._layout_due:
                self._layout_due = False
                self._cols, self._rows = _size(self.stdout_fd)
                self._write(self._region())
            self._write(self._banner_bytes())

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.stdout_fd, view)
            except BlockingIOError:
                select.select([], [self.stdout_fd], [], 1.0)
                continue
            except OSError:
                return  # the terminal is gone; the loop ends the session
            view = view[written:]

    def _enter(self) -> None:
        for signum, handler in ((signal.SIGHUP, self._hangup), (signal.SIGTERM, self._hangup), (signal.SIGWINCH, self._resized)):
            try:
                self._old_handlers[signum] = signal.signal(signum, handler)
            except (ValueError, OSError):  # not the main thread: the caller handles signals
                pass
        if os.isatty(self.stdin_fd):
            self._saved_tty = termios.tcgetattr(self.stdin_fd)
            tty.setraw(self.stdin_fd)
        if self.banner:
            with self._lock:
                # Room for the banner: a new line scrolls the screen up if the cursor sits at the top.
                self._write(f"\r\n\x1b[2;{self._rows}r\x1b[{self._rows};1H".encode())
                self._write(self._banner_bytes())

    def _leave(self) -> None:
        if self.banner:
            with self._lock:
                self._write(f"\x1b7\x1b[1;1H\x1b[2K\x1b8\x1b[r\x1b[{self._rows};1H\x1b]2;\x07\r\n".encode())
        if self._saved_tty is not None:
            termios.tcsetattr(self.stdin_fd, termios.TCSADRAIN, self._saved_tty)
            self._saved_tty = None
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()
        self._closed = True
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _hangup(self, signum: int, frame: object) -> None:
        self._stop_reason = "the user's terminal was closed" if signum == signal.SIGHUP else "the session was stopped"
        self.ended("")

    def _resized(self, signum: int, frame: object) -> None:
        self._layout_due = True
        self.ended("")
