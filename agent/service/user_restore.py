"""A restore the agent service does for a user of the PC: the files come back as theirs, placed by the user.

The service (root) reads the repository and restores the path into a staging
folder of its own, outside the user's home, then gives that folder and
everything in it to the user. Every step inside the user's home — making the
target folder, moving an original aside before an overwrite, copying the
restored copy into place — is a child process running as the user (their uid,
gid and groups, through :mod:`agent.execute`), so it can do nothing there the
user could not do themselves: a link the user planted cannot make the service
write elsewhere. The staging folder is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from agent import execute
from agent.snapshots import restic as R
from agent.snapshots.jobs import Restored, Snapshots, _give, _kept_at, _placed_at
from protocol.errors import HelplineError, InvalidInputError

#: Seconds one placing step (mkdir, mv, cp) may take.
PLACE_TIMEOUT = 3600.0


def _as_user(user, argv: tuple[str, ...], what: str) -> None:
    """Run ``argv`` as ``user`` (a pwd entry) in their home; HelplineError with its stderr when it fails."""
    run_as = execute.RunAs(user.pw_uid, user.pw_gid, tuple(os.getgrouplist(user.pw_name, user.pw_gid)))
    done = execute.run(argv, timeout=PLACE_TIMEOUT, as_user=run_as, cwd=Path(user.pw_dir),
                       env={"HOME": user.pw_dir, "PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    if done.exit_code != 0:
        detail = (done.stderr_tail or "").strip().splitlines()
        raise HelplineError(f"Could not {what}: {detail[-1] if detail else f'exit status {done.exit_code}'}.",
                            hint="Check the folder's permissions; nothing was overwritten.")


def restore_as_user(snapshots: Snapshots, user, original: Path, *, snapshot: str | None, at: datetime | None,
                    to: Path | None, overwrite: bool, repository: str, area: Path,
                    on_progress: Callable[[R.Progress], None] | None = None) -> Restored:
    """Restore ``original`` (in ``user``'s home) from a snapshot; staged in ``area``, placed by the user."""
    if overwrite and to is not None:
        raise InvalidInputError("--overwrite puts the file back in its place; it cannot go with --to")
    if original == Path(user.pw_dir):
        raise InvalidInputError("restore a file or a folder of your home, not the whole of it at once",
                                hint="name a folder in it, or restore beside it with --to")
    if to is not None:
        _as_user(user, ("mkdir", "-p", "--", str(to)), f"make the folder {to}")
    staging = Path(tempfile.mkdtemp(prefix="restore-", dir=area))
    try:
        chosen, restored = snapshots.restore_into(staging, original, snapshot=snapshot, at=at, repository=repository,
                                                  on_progress=on_progress)
        _give(staging, (user.pw_uid, user.pw_gid))  # theirs now, so their own process can take it
        final = _placed_at(original, chosen, to=to, overwrite=overwrite)
        kept = None
        if overwrite and os.path.lexists(original):
            kept = _kept_at(original, snapshots.clock())
            _as_user(user, ("mv", "--", str(original), str(kept)), f"move {original} aside")
        _as_user(user, ("cp", "-a", "--", str(restored), str(final)), f"put the restored copy at {final}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Restored(chosen, str(original), final, kept)
