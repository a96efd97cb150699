"""Wire schemas of snapshots: repository credentials, run reports, verified restores, escrow and protection.

A PC keeps restic snapshots in a local repository and in a server-side one the
Helpline server serves over restic's REST protocol under
``/v1/restic/<agent_id>/``. The agent asks for a short-lived credential for
that repository per run (:class:`CredentialRequest` -> :class:`RepositoryCredential`)
over its signed channel, then reports each run (:class:`SnapshotReport`) and
each sample restore it checked (:class:`VerifyReport`). Engineers read a PC's
standing as :class:`ProtectionStatus`.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from protocol.schemas import _Model

#: Where the restic REST repositories live on the server: ``/v1/restic/<agent_id>/``.
RESTIC_PREFIX = "/v1/restic"

#: An agent id as the server makes them (a lower-case UUID); nothing else names a repository.
AGENT_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_AGENT_ID = re.compile(AGENT_ID_PATTERN)

#: The object types of a restic repository the server stores (``config`` is a single file beside them).
OBJECT_TYPES = ("data", "keys", "locks", "snapshots", "index")
#: An object's name: the SHA-256 of its content, in lower-case hex.
OBJECT_NAME_PATTERN = r"^[0-9a-f]{64}$"

#: How many warnings a report carries at most (a run that could not read thousands of files names the first ones).
MAX_WARNINGS = 50

AgentId = Annotated[str, StringConstraints(pattern=AGENT_ID_PATTERN)]
SnapshotId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8,64}$")]
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
ReportText = Annotated[str, StringConstraints(max_length=2000)]
ReportPath = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


def is_agent_id(text: str) -> bool:
    """Whether ``text`` has the shape of an agent id (and so may name a repository)."""
    return bool(_AGENT_ID.match(text))


class RepositoryMode(StrEnum):
    """What a repository credential allows."""

    APPEND = "append"  # the agent's own repository: create and read; never delete or overwrite (except its locks)
    READ = "read"  # read only, e.g. a replacement PC restoring from the old PC's repository (restic --no-lock)
    ADMIN = "admin"  # the server's own, for forget/prune; never handed to an agent


class CredentialRequest(_Model):
    """An agent asking for a short-lived credential to a server-side repository."""

    purpose: Literal["backup", "restore", "check"]
    request_id: RequestId | None = Field(
        default=None, description="An engineer's replacement-restore request that names this PC as the target.")
    agent_id: AgentId | None = Field(default=None, description="Whose repository; default the caller's own.")


class RepositoryCredential(_Model):
    """A credential for one agent's repository; the secret is inside ``url`` (restic 0.14 reads it from there)."""

    agent_id: str
    url: str = Field(description="The REST URL with the credential embedded (restic takes it as rest:URL): "
                                 "https://USER:SECRET@host:port/v1/restic/<agent_id>/. Keep it in a 0600 file "
                                 "passed with --repository-file; never on a command line or in an environment.")
    mode: RepositoryMode
    expires_at: datetime


class SnapshotReport(_Model):
    """What a PC reports after each snapshot run, successful or not."""

    repository: Literal["local", "server"]
    status: Literal["ok", "partial", "failed"]
    snapshot_id: SnapshotId | None = None
    started_at: datetime
    finished_at: datetime
    paths: list[ReportPath] = Field(default_factory=list, max_length=1000)
    files_new: int = Field(default=0, ge=0)
    files_changed: int = Field(default=0, ge=0)
    files_unmodified: int = Field(default=0, ge=0)
    total_files: int = Field(default=0, ge=0)
    bytes_added: int = Field(default=0, ge=0)
    total_bytes: int = Field(default=0, ge=0)
    warnings: list[ReportText] = Field(default_factory=list, max_length=MAX_WARNINGS,
                                       description=f"e.g. unreadable files; at most {MAX_WARNINGS}.")
    error: ReportText | None = None


class VerifyReport(_Model):
    """A sample restore the PC made into a private folder and compared by hash."""

    repository: Literal["local", "server"]
    snapshot_id: SnapshotId
    at: datetime
    files_checked: int = Field(ge=0)
    bytes_checked: int = Field(ge=0)
    ok: bool
    detail: ReportText = ""


class EscrowPut(_Model):
    """A repository password: sent to the server for escrow, or released to a replacement PC."""

    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class ProtectionStatus(_Model):
    """A PC's standing, for an engineer: when it was last protected and proven restorable, in plain words."""

    agent_id: str
    hostname: str
    state: Literal["protected", "stale", "never", "failing", "unverified"]
    last_snapshot_at: datetime | None = None
    last_snapshot_id: str | None = None
    last_failure_at: datetime | None = None
    last_error: str | None = None
    last_verified_at: datetime | None = None
    words: str = Field(description="Plain English, e.g. 'Protected: last snapshot 40 minutes ago; "
                                   "last verified restore yesterday'.")
