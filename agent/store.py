"""Where this PC's agent identity lives: its key, credential, pinned server key and linked tickets.

An :class:`AgentStore` is one folder: the per-user data folder on a PC without
the agent service (the default, or HELPLINE_AGENT_DIR), or the service's
machine-wide state folder where the service runs (docs/design.md, "One
identity per PC"). Nothing outside this module knows the file names.
"""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.paths import agent_dir, write_private
from protocol.errors import ConfigError

if TYPE_CHECKING:  # signing loads when the PC talks to its server; a local restore reads its state alone
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.http import AgentSigner

KEY_FILE = "agent-key.pem"
STATE_FILE = "agent.json"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def instance_id(directory: Path) -> str:
    """Which running copy of the agent identity in ``directory`` this is: the same for every process of one
    installation (the service and the user's commands) until the PC restarts, different for a copy of the
    folder elsewhere.

    It digests the boot id (Linux: a new one at each start of the PC) and the folder's real path. A disk
    image copied with the agent's key and started on another PC boots with another boot id; a folder
    copied to another path on the same PC has another path. Where there is no boot id (macOS, Windows)
    the host name stands in for it, so copies are told apart when their host names differ. Nothing here
    is secret: it tells the server two copies of one key apart, it proves nothing about who holds it.
    """
    try:
        boot = "boot " + _BOOT_ID.read_text(encoding="ascii").strip()
    except OSError:
        boot = "host " + socket.gethostname()
    try:
        where = str(directory.resolve())
    except OSError:
        where = str(directory.absolute())
    material = "\0".join(("helpline agent instance", boot, where))
    return hashlib.sha256(material.encode("utf-8", "surrogateescape")).hexdigest()[:32]


@dataclass
class AgentState:
    server_url: str
    agent_id: str
    credential: str
    server_public_key: str
    enrolled: bool = False
    group: str | None = None
    tickets: list[str] = field(default_factory=list)
    #: The server's answer at the last enrollment or pairing put this agent in "pending" (it looked like
    #: another agent): an administrator must approve it. Informational; the server enforces it.
    pending: bool = False

    @property
    def server_fingerprint(self) -> str:
        from protocol import signing  # the signing code (and cryptography) loads for the server's work only

        return signing.fingerprint(self.server_public_key)


class AgentStore:
    """One folder holding this PC's agent identity and its outbox; files 0600, folders 0700."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory or agent_dir()

    def key(self) -> Ed25519PrivateKey:
        """This PC's agent key, created (0600) the first time it is needed."""
        from protocol import signing

        return signing.load_or_create_private_key(self.directory / KEY_FILE)

    def load(self) -> AgentState | None:
        """The saved state, or None if this PC has never enrolled or paired."""
        path = self.directory / STATE_FILE
        try:
            return AgentState(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"The agent state file {path} is damaged.", hint="Enroll or pair this PC again.") from exc

    def require(self) -> AgentState:
        """The saved state; ConfigError if this PC is not linked to a server yet."""
        state = self.load()
        if state is None:
            raise ConfigError("This PC is not linked to a Helpline server yet.",
                              hint="Run `helpline pair CODE --server URL` with the code your engineer gives you.")
        return state

    def signer(self, state: AgentState | None = None) -> AgentSigner:
        """How this PC's agent signs its requests to its server and checks the answers (ConfigError if not linked)."""
        from agent.http import AgentSigner

        state = state or self.require()
        return AgentSigner(state.agent_id, self.key(), state.server_public_key, instance=instance_id(self.directory),
                           on_repin=lambda key: self.repin(state.server_url, state.agent_id, key))

    def repin(self, server_url: str, agent_id: str, server_public_key: str) -> None:
        """Pin the server's new key (after a verified hand-over), if this folder still holds that link."""
        state = self.load()
        if state is None or (state.server_url, state.agent_id) != (server_url, agent_id):
            return
        state.server_public_key = server_public_key
        self.save(state)

    def save(self, state: AgentState) -> None:
        write_private(self.directory / STATE_FILE, json.dumps(asdict(state), indent=2).encode())

    def folder(self, name: str) -> Path:
        """A private sub-folder (the outbox, share work folders), created 0700 when first needed."""
        path = self.directory / name
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path
