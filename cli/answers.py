"""Reading the person's answers at a terminal, so that Ctrl-C always stops the question.

``input()`` and ``getpass()`` block in one read of the terminal. A Ctrl-C that
arrives just before that read (between the interpreter's last look for signals
and the system call), or that the kernel hands to another thread, marks the
signal for the interpreter without interrupting the read: the command waits for
a line that never comes, and the person's Ctrl-C seems to do nothing. Here the
terminal is read only once it has a line (the kernel's line editing works as
before), and the wait wakes every :data:`WAKE_SECONDS` to let a marked Ctrl-C
stop it. Where a terminal cannot be waited on so (Windows, or no terminal) the
plain functions are used.
"""

from __future__ import annotations

import os
import sys

#: Seconds between two looks for a Ctrl-C while the terminal has no line yet.
WAKE_SECONDS = 0.2
#: Bytes read at once: more than a terminal's line (4095 characters in canonical mode).
_READ_BYTES = 65536


def _terminal_fd() -> int | None:
    """The file descriptor of standard input when it is a terminal this module can wait on, else None."""
    if os.name == "nt":
        return None
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # replaced, closed or detached
        return None
    return fd if os.isatty(fd) else None


def _read_line(fd: int) -> str:
    """One line typed on the terminal ``fd``, without its end; EOFError when it is closed (Ctrl-D)."""
    import select

    chunks: list[bytes] = []
    while True:  # as input(): for as long as the person takes; each turn lets a Ctrl-C through
        ready, _, _ = select.select([fd], [], [], WAKE_SECONDS)
        if not ready:
            continue
        data = os.read(fd, _READ_BYTES)
        if not data:  # Ctrl-D on an empty line, or the terminal went away
            if not chunks:
                raise EOFError
            break
        chunks.append(data)
        if data.endswith(b"\n"):  # Ctrl-D in mid-line hands over what was typed: wait on for the rest
            break
    text = b"".join(chunks).decode(sys.stdin.encoding or "utf-8", errors="replace")
    return text.removesuffix("\n").removesuffix("\r")


def _write(stream, prompt: str) -> None:
    for other in (sys.stdout, sys.stderr):  # what was said before the question shows first, as input() does
        if other is not stream:
            try:
                other.flush()
            except (OSError, ValueError):
                pass
    stream.write(prompt)
    stream.flush()


def ask(prompt: str = "") -> str:
    """``input(prompt)`` that a Ctrl-C always stops (KeyboardInterrupt); the prompt goes to standard output."""
    fd = _terminal_fd()
    if fd is None:
        return input(prompt)
    _write(sys.stdout, prompt)
    return _read_line(fd)


def ask_hidden(prompt: str = "Password: ") -> str:
    """``getpass(prompt)`` that a Ctrl-C always stops: what is typed is not shown; the prompt goes to standard error."""
    fd = _terminal_fd()
    if fd is None:
        import getpass

        return getpass.getpass(prompt)
    import termios

    before = termios.tcgetattr(fd)
    quiet = list(before)
    quiet[3] &= ~termios.ECHO  # local modes: no echo; the line editing and Ctrl-C stay
    # Echo goes off before the prompt shows, and what was typed before is dropped (as getpass does): nothing
    # typed ahead is taken for the password, and nothing typed after the prompt is shown.
    termios.tcsetattr(fd, termios.TCSAFLUSH, quiet)
    try:
        _write(sys.stderr, prompt)
        return _read_line(fd)
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, before)
        sys.stderr.write("\n")  # the Enter that was not shown
        sys.stderr.flush()


def install() -> None:
    """Make every question the CLI's prompts ask (typer's prompt and confirm) read through :func:`ask`."""
    from typer._click import termui  # typer 0.26 carries click inside; its prompts look these up when they ask

    termui.visible_prompt_func = ask
    termui.hidden_prompt_func = ask_hidden
