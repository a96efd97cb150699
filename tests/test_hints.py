"""Every hint names only commands its reader can run.

A hint for anyone (``hint=``) may name only commands everyone runs, unless its
module is only ever reached by engineers or admins; a hint for one audience
(``hints={Audience.X: ...}``) may name only commands that audience runs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import typer

from cli.main import _user_commands, app
from protocol.errors import Audience

ROOT = Path(__file__).resolve().parents[1]

# Modules whose errors only ever reach engineers (a logged-in command) or admins (running the server).
READERS = {
    "cli/credentials.py": Audience.ENGINEER,
    "cli/commands/engineer.py": Audience.ENGINEER,
    "cli/commands/diag.py": Audience.ENGINEER,
    "cli/commands/connect.py": Audience.ENGINEER,
    "cli/commands/pc.py": Audience.ENGINEER,
    "cli/commands/admin.py": Audience.ADMIN,
    "cli/commands/server.py": Audience.ADMIN,
    "server/settings.py": Audience.ADMIN,
    "server/webhooks.py": Audience.ADMIN,  # only the admins' webhook routes raise these
    "server/keys.py": Audience.ADMIN,  # the server's key files: read by `helpline server` commands and at start
    "cli/commands/webhook.py": Audience.ADMIN,
    "server/db.py": Audience.ADMIN,
    "server/api/health.py": Audience.ADMIN,  # /readyz is the operator's probe
    "server/api/deps.py": Audience.ENGINEER,  # token hints; a PC is checked for its credential, with AGENT_HINT
}
# Engineers' own commands; with the users' commands, everything else is for admins.
ENGINEER_COMMANDS = {"login", "logout", "whoami", "ticket", "diag", "ssh-key", "agent list", "agent show",
                     "connect", "relay", "sessions", "chat", "recording", "pc", "policy list", "policy show"}

_MENTION = re.compile(r"`helpline ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?")


def runs(audience: Audience, first: str, second: str | None) -> bool:
    """Whether ``audience`` may run `helpline first second`."""
    if audience is Audience.ADMIN or first in _user_commands() | {"completion"}:
        return True
    return audience is Audience.ENGINEER and (first in ENGINEER_COMMANDS or f"{first} {second}" in ENGINEER_COMMANDS)


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def hints_in(path: Path) -> list[tuple[int, Audience | None, str]]:
    """(line, audience or None for anyone, text) of every hint written in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg == "hint":
                found += [(node.lineno, None, text) for text in _strings(keyword.value)]
            elif keyword.arg == "hints" and isinstance(keyword.value, ast.Dict):
                for key, value in zip(keyword.value.keys, keyword.value.values):
                    audience = Audience[key.attr] if isinstance(key, ast.Attribute) else None
                    found += [(node.lineno, audience, text) for text in _strings(value)]
    return found


def test_the_command_table_knows_every_command():
    names = {c.name or typer.main.get_command_name(c.callback.__name__) for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups}
    assert {"share", "status", "pair"} <= _user_commands() <= names
    assert {first.split()[0] for first in ENGINEER_COMMANDS} <= names


def test_no_hint_names_a_command_its_reader_cannot_run():
    wrong = []
    for folder in ("agent", "server", "cli"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            module = path.relative_to(ROOT).as_posix()
            for line, audience, text in hints_in(path):
                reader = audience or READERS.get(module, Audience.USER)
                for first, second in _MENTION.findall(text):
                    if not runs(reader, first, second or None):
                        wrong.append(f"{module}:{line}: {reader.value} is told to run `helpline {first} {second}`".rstrip())
    assert not wrong, "\n".join(wrong)


def test_the_check_catches_a_user_sent_to_an_engineer_command(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('raise NotFoundError("x", hint="Check with `helpline ticket list`.")\n'
                       'raise NotFoundError("y", hints={Audience.ENGINEER: "Run `helpline account list`."})\n')
    found = hints_in(planted)
    assert [(audience, runs(audience or Audience.USER, *(_MENTION.findall(text)[0]))) for _, audience, text in found] == [
        (None, False), (Audience.ENGINEER, False)]
