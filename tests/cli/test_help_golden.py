"""The rendered help of a few commands, pinned as text so an upgrade of typer or rich cannot change it silently.

Each page is rendered by a fresh `helpline` process with no terminal, NO_COLOR and 100 columns,
and compared with tests/cli/golden/<command>.txt (trailing spaces stripped). When a change to the
help is intended, regenerate the files and review the diff before committing:

    HELPLINE_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/cli/test_help_golden.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("HELPLINE_REGENERATE_GOLDEN") == "1"

PAGES = [
    [],
    ["share"],
    ["pair"],
    ["ticket", "list"],
    ["ticket", "update"],
    ["agent", "enroll"],
    ["server", "run"],
]

# Variables that would change how rich or typer draw: terminal width, colour, forced terminals.
_STYLING = ("COLUMNS", "LINES", "TERMINAL_WIDTH", "FORCE_COLOR", "PY_COLORS", "CLICOLOR", "CLICOLOR_FORCE",
            "TTY_COMPATIBLE", "TTY_INTERACTIVE", "GITHUB_ACTIONS", "JUPYTER_COLUMNS", "JUPYTER_LINES",
            "_TYPER_FORCE_DISABLE_TERMINAL", "TYPER_USE_RICH")


def render(words: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in _STYLING}
    env.update({"NO_COLOR": "1", "COLUMNS": "100", "TERM": "dumb",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    result = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", *words, "--help"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    return "\n".join(line.rstrip() for line in result.stdout.splitlines()).strip("\n") + "\n"


@pytest.mark.parametrize("words", PAGES, ids=lambda words: " ".join(["helpline", *words]))
def test_help_matches_the_golden_text(words):
    golden = GOLDEN / ("_".join(["helpline", *words]) + ".txt")
    rendered = render(words)
    if REGENERATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(rendered)
    assert golden.exists(), f"{golden.name} is missing; regenerate with HELPLINE_REGENERATE_GOLDEN=1"
    assert rendered == golden.read_text(), (
        f"`helpline {' '.join(words)} --help` changed; if that is intended, regenerate with HELPLINE_REGENERATE_GOLDEN=1 and review the diff")
