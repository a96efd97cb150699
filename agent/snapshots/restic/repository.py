"""Where a restic repository is and how to open it, and the options every restic command shares.

The password is only ever named by its file (``--password-file``): never in
argv, never in a child's environment. A location that carries a credential
(``rest:https://agent:token@host/repo``, as restic 0.14 needs for its REST
backend) never goes on argv, where every user of the PC could read it: it
is written to a file only the agent can read and named with
``--repository-file`` (``location_file``), or, without such a file, handed
over in the child's environment; it is masked in logs and errors either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import InvalidInputError

from .version import Restic

#: Restic's environment that would override or clash with what the wrapper passes; always blanked.
_BLANKED_ENV = (
    "RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND", "RESTIC_PASSWORD_FILE",
    "RESTIC_REPOSITORY", "RESTIC_REPOSITORY_FILE",
)
#: JSON status lines per second: restic's default for --json is 60, far more than a progress bar needs.
PROGRESS_FPS = "2"

_CREDENTIAL = re.compile(r"^(?P<head>[a-z0-9]+:[a-z][a-z0-9+.-]*://[^/@:]*:)(?P<secret>[^/@]+)(?P<tail>@.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Repository:
    """A restic repository: its location (a local folder or a backend URL) and the file holding its password."""

    location: str
    password_file: Path
    #: A CA certificate restic trusts for the backend's TLS (the Helpline server's).
    cacert: Path | None = None
    #: Restic's cache folder; restic's own default when None.
    cache_dir: Path | None = None
    #: A 0600 file holding ``location`` (a credentialed URL), passed as ``--repository-file``.
    location_file: Path | None = None

    def __post_init__(self) -> None:
        if not str(self.location).strip():
            raise InvalidInputError("a restic repository needs a location")
        if str(self.location).startswith("-"):
            raise InvalidInputError(f"a restic repository location cannot start with '-': {self.location!r}")

    @property
    def credential(self) -> str | None:
        """The password embedded in the location's URL, if any."""
        found = _CREDENTIAL.match(str(self.location))
        return found["secret"] if found else None

    @property
    def display(self) -> str:
        """The location fit for messages and logs: its embedded credential masked."""
        found = _CREDENTIAL.match(str(self.location))
        return f"{found['head']}***{found['tail']}" if found else str(self.location)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never appear in a log or an error: the embedded credential and the full location holding it."""
        return (str(self.location), self.credential) if self.credential else ()


def go_duration(seconds: float) -> str:
    """Return ``seconds`` as a Go duration restic accepts (whole seconds, at least one)."""
    return f"{max(1, round(seconds))}s"


def common_options(
    restic: Restic, repository: Repository, *, no_lock: bool = False, retry_lock: float | None = None,
) -> tuple[str, ...]:
    """Return the options every command on ``repository`` takes.

    ``no_lock`` opens the repository without a lock (a read-only replacement
    restore); ``retry_lock`` seconds let restic wait for a lock itself where it
    can (0.16 and newer; older ones are retried by the runner).
    """
    options: list[str] = []
    if repository.location_file is not None:
        options += ["--repository-file", str(repository.location_file)]
    elif repository.credential is None:
        options += ["--repo", str(repository.location)]
    options += ["--password-file", str(repository.password_file)]
    if repository.cacert is not None:
        options += ["--cacert", str(repository.cacert)]
    if repository.cache_dir is not None:
        options += ["--cache-dir", str(repository.cache_dir)]
    if no_lock:
        options.append("--no-lock")
    elif retry_lock is not None and restic.features.retry_lock:
        options += ["--retry-lock", go_duration(retry_lock)]
    return tuple(options)


def child_env(repository: Repository) -> dict[str, str]:
    """Return what restic's environment gets laid over ours: clashing variables blanked, a credentialed location."""
    env = {name: "" for name in _BLANKED_ENV}
    if repository.credential is not None and repository.location_file is None:
        env["RESTIC_REPOSITORY"] = str(repository.location)
    env["RESTIC_PROGRESS_FPS"] = PROGRESS_FPS
    from agent.config import configured_proxy

    proxy = configured_proxy()
    if proxy:  # the proxy the agent's configuration names reaches the server's REST repository too
        env["HTTPS_PROXY"] = env["HTTP_PROXY"] = proxy
    return env
