"""How the CLI talks to people: tables, JSON for scripts, times, one-line errors.

Consoles are made at the moment of writing, on the current sys.stdout and
sys.stderr, so tests (and callers embedding the CLI) can swap the streams.
Colour follows rich's detection: only on a terminal, never with NO_COLOR.
Text from a PC or the server goes through protocol.untrusted.printable on its way
to the terminal (table cells, esc()'d values, whole messages and errors), so it
cannot clear the screen, colour it, set the window title or plant a link; JSON
output stays exact data (json.dumps escapes control characters itself).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from protocol import times
from protocol.units import human_size
from protocol.untrusted import is_control, printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.style import Style

DEBUG = {"enabled": False}


# rich loads when something is written for people, not before: a command that answers in JSON (or a restore,
# whose restic waits for the CLI to start) does without it.
def console() -> Console:
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def _is_model(value: Any) -> bool:
    """Whether ``value`` is a pydantic model; pydantic is not loaded for it when nothing loaded it yet, since
    then no model exists (a command that makes none, such as a local restore, starts without it)."""
    models = sys.modules.get("pydantic")
    return models is not None and isinstance(value, models.BaseModel)


def err_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def _plain(value: Any) -> Any:
    if _is_model(value):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def print_json(value: Any) -> None:
    """Write ``value`` as JSON on stdout, for scripts (no colour, no wrapping)."""
    text = json.dumps(_plain(value), indent=2, ensure_ascii=False)
    sys.stdout.write(_NON_ASCII_OR_DEL.sub(_json_escape, text) + "\n")
    sys.stdout.flush()


# json.dumps escapes C0 controls itself; DEL, C1, bidi and zero-width characters pass through
# with ensure_ascii=False. They can only sit inside JSON strings, where \uXXXX keeps the exact data.
_NON_ASCII_OR_DEL = re.compile(r"[^\x00-\x7e]")


def _json_escape(match: re.Match[str]) -> str:
    ch = match.group()
    return json.dumps(ch)[1:-1] if is_control(ch) else ch


def esc(value: object) -> str:
    """Text from users or the server, made printable and safe to put inside a message with markup."""
    from rich.markup import escape

    return escape(printable(value))


def say(message: str) -> None:
    """Print a message; its [bold]…[/] markup is ours, anything interpolated goes through esc().

    The whole message is made printable too, so a value interpolated without
    esc() still cannot carry a control sequence to the terminal, and hyperlink
    markup is dropped: Helpline's own messages have none, so one can only come
    from a value that slipped in unescaped.
    """
    from rich.text import Span

    con = console()
    text = con.render_str(printable(message))
    text.spans = [Span(span.start, span.end, _unlinked(con, span.style)) for span in text.spans]
    con.print(text)


def _unlinked(con: Console, style: str | Style) -> str | Style:
    resolved = con.get_style(style, default="")
    return resolved.update_link(None) if resolved.link else style


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*(Text("" if v is None else printable(v)) for v in row))  # cells are data, never markup
    console().print(t)


def local_time(when: datetime | None, *, now: datetime | None = None) -> str:
    """Say a moment in this computer's zone with its day and zone: ``today 15:40 CET``, ``Mon 24 Nov 09:00 UTC``."""
    if when is None:
        return "—"
    return times.moment(when, now=now)


def full_time(when: datetime | None) -> str:
    """Format a moment with its day and zone, in the PC's time zone: ``Mon 24 Nov 2026 09:00 CET``."""
    if when is None:
        return "—"
    return when.astimezone().strftime("%a %d %b %Y %H:%M %Z")


def duration(minutes: float) -> str:
    """Say a response window the way a person would: ``30 min``, ``4 h``, ``2 days``."""
    return times.duration(minutes * 60)


def about(length: float | timedelta) -> str:
    """Say a length of time in seconds rounded, for promises and waits: ``about 15 minutes``, ``about 3 hours``."""
    return times.about(length)


def span(length: float | timedelta) -> str:
    """Say a length of time given in seconds (or a timedelta): ``43 s``, ``14 min 43 s``, ``3 h 5 min``."""
    return times.duration(length)


def size(n: float) -> str:
    """Say a size in decimal units: ``812 B``, ``37.6 KB``, ``1.4 MB`` (the timeline's formatter too)."""
    return human_size(n)


def promise(due: datetime, window_minutes: float) -> str:
    return f"An engineer will answer by {local_time(due)} (within {duration(window_minutes)})."


def error(message: str, hint: str | None = None) -> None:
    from rich.markup import escape

    con = err_console()
    con.print(f"[bold red]error:[/] {escape(printable(message, multiline=False))}", markup=True)
    if hint:
        con.print(f"[dim]hint:[/] {escape(printable(hint, multiline=False))}", markup=True)
