"""What a command loads before it does anything: nothing it never uses (each costs every command's start)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import agent
import server

# Everything a share to a server loads, with the command itself (cli.main refuses httpx's own CLI client).
SHARE_TO_A_SERVER = ("cli.main", "cli.commands.share", "agent.share", "agent.upload", "agent.link", "agent.http",
                     "agent.identity", "agent.bundle.manifest", "httpx")


def loaded_after(*modules: str) -> set[str]:
    # A name whose entry is None was refused, not loaded.
    code = "".join(f"import {m}\n" for m in ("sys", *modules)) + (
        "print('\\n'.join(sorted(name for name, module in sys.modules.items() if module is not None)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return set(done.stdout.split())


def test_the_version_is_written_once_and_the_installed_package_says_the_same():
    assert agent.__version__ == server.__version__ == version("helpline")
    assert agent.__version__.count(".") >= 2 and all(part.isdigit() for part in agent.__version__.split(".")[:2])


def test_a_share_to_a_server_loads_no_package_metadata_and_no_httpx_command_line_client():
    loaded = loaded_after(*SHARE_TO_A_SERVER)
    assert {"httpx", "agent.redaction"} <= loaded  # what it needs is there
    assert not loaded & {"importlib.metadata", "httpx._main", "pygments", "rich.syntax"}
