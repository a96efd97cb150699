"""run_command: real processes, every status it can return, and the guarantees behind them
(streamed byte cap, process-group kill, C locale)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from agent.diagnostics.model import ItemStatus
from agent.diagnostics.runner import STDERR_TAIL_BYTES, run_command
from protocol.errors import InvalidInputError

PY = sys.executable


def _gone(pid: int) -> bool:
    """True when no live process has ``pid`` (a zombie waiting for a reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_ok_command_streams_stdout_to_dest(tmp_path: Path):
    dest = tmp_path / "out" / "hello.txt"
    result = run_command((PY, "-c", "print('hello'); print('world')"), dest, timeout=10, max_bytes=1024)
    assert result.status is ItemStatus.OK
    assert result.exit_code == 0
    assert dest.read_text() == "hello\nworld\n"
    assert result.size == dest.stat().st_size == 12
    assert not result.truncated


def test_missing_binary_is_not_found_and_writes_nothing(tmp_path: Path):
    dest = tmp_path / "missing.txt"
    result = run_command(("helpline-no-such-binary-3f9a",), dest, timeout=5, max_bytes=1024)
    assert result.status is ItemStatus.NOT_FOUND
    assert result.exit_code is None
    assert not dest.exists()


def test_timeout_kills_the_whole_process_group(tmp_path: Path):
    # The command starts a grandchild, reports its pid, then both sleep; both must die.
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    dest = tmp_path / "slow.txt"
    started = time.monotonic()
    result = run_command((PY, "-c", script), dest, timeout=0.7, max_bytes=1024)
    elapsed = time.monotonic() - started
    assert result.status is ItemStatus.TIMEOUT
    assert result.exit_code is None
    assert elapsed < 5 and result.duration < 5
    grandchild = int(dest.read_text().split()[0])
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not (_gone(result.pid) and _gone(grandchild)):
        time.sleep(0.05)
    assert _gone(result.pid), "the command outlived its timeout"
    assert _gone(grandchild), "a child of the command outlived the timeout"


def test_output_beyond_the_cap_is_truncated_at_exactly_the_cap(tmp_path: Path):
    dest = tmp_path / "big.txt"
    cap = 1_000_000
    result = run_command((PY, "-c", "import sys; sys.stdout.write('x' * 5_000_000)"), dest, timeout=20, max_bytes=cap)
    assert result.status is ItemStatus.TRUNCATED
    assert result.truncated
    assert dest.stat().st_size == cap == result.size


def test_output_exactly_at_the_cap_is_not_truncated(tmp_path: Path):
    dest = tmp_path / "exact.txt"
    result = run_command((PY, "-c", "import sys; sys.stdout.write('y' * 4096)"), dest, timeout=10, max_bytes=4096)
    assert result.status is ItemStatus.OK
    assert dest.stat().st_size == 4096


def test_nonzero_exit_is_error_with_exit_code_and_output_kept(tmp_path: Path):
    dest = tmp_path / "fail.txt"
    script = "import sys; print('partial result'); sys.stderr.write('boom: disk on fire\\n'); sys.exit(3)"
    result = run_command((PY, "-c", script), dest, timeout=10, max_bytes=1024)
    assert result.status is ItemStatus.ERROR
    assert result.exit_code == 3
    assert dest.read_text() == "partial result\n"
    assert "boom: disk on fire" in result.stderr_tail


def test_permission_refused_at_exec_is_denied(tmp_path: Path):
    # An executable script whose interpreter is not executable: execve fails with EACCES,
    # for root too (which no file mode alone can achieve).
    interpreter = tmp_path / "interpreter"
    interpreter.write_text("not a program\n")
    interpreter.chmod(0o644)
    program = tmp_path / "program"
    program.write_text(f"#!{interpreter}\n")
    program.chmod(0o755)
    dest = tmp_path / "denied.txt"
    result = run_command((str(program),), dest, timeout=5, max_bytes=1024)
    assert result.status is ItemStatus.DENIED
    assert not dest.exists()


def test_stderr_is_kept_as_a_bounded_tail_without_blocking(tmp_path: Path):
    # 1 MB on each pipe: a runner that reads one pipe at a time would deadlock here.
    script = "import sys; sys.stderr.write('e' * 1_000_000 + 'END'); sys.stdout.write('o' * 1_000_000)"
    dest = tmp_path / "both.txt"
    result = run_command((PY, "-c", script), dest, timeout=20, max_bytes=2_000_000)
    assert result.status is ItemStatus.OK
    assert dest.stat().st_size == 1_000_000
    assert len(result.stderr_tail) <= STDERR_TAIL_BYTES
    assert result.stderr_tail.endswith("END")


def test_commands_run_in_the_c_locale_and_env_overrides_apply(tmp_path: Path):
    dest = tmp_path / "env.txt"
    script = "import os; print(os.environ['LC_ALL'], os.environ['HELPLINE_PROBE'])"
    result = run_command((PY, "-c", script), dest, timeout=10, max_bytes=1024, env={"HELPLINE_PROBE": "yes"})
    assert result.status is ItemStatus.OK
    expected = "C" if os.name != "nt" else os.environ.get("LC_ALL", "")
    assert dest.read_text().split() == [expected, "yes"]


def test_argv_is_never_interpreted_by_a_shell(tmp_path: Path):
    dest = tmp_path / "literal.txt"
    result = run_command((PY, "-c", "import sys; print(sys.argv[1])", "$(echo pwned); echo x"), dest,
                         timeout=10, max_bytes=1024)
    assert result.status is ItemStatus.OK
    assert dest.read_text() == "$(echo pwned); echo x\n"


@pytest.mark.parametrize("argv, timeout, cap", [((), 1, 10), (("true",), 0, 10), (("true",), 1, -1)])
def test_wrong_calls_raise(tmp_path: Path, argv, timeout, cap):
    with pytest.raises(InvalidInputError):
        run_command(argv, tmp_path / "x", timeout=timeout, max_bytes=cap)
