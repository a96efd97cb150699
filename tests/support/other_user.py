"""Calling as another OS user in a test: a forked child that drops to that uid (CI runs as root)."""

from __future__ import annotations

import json
import os


def as_user(uid: int, fn) -> dict:
    """Run ``fn`` in a forked child that dropped to ``uid`` (groups, gid, uid); return {"ok": result} or {"error": class name, "message": text}."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                result = {"ok": fn()}
            except Exception as exc:  # noqa: BLE001 - handed to the parent to assert on
                result = {"error": type(exc).__name__, "message": str(exc)}
            os.write(write, json.dumps(result).encode())
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)
