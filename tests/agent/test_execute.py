"""agent.execute against real processes: deadline, cap, line delivery, stop signals and the
grace before the kill, masking, exit-code tables; and that no other agent module runs programs."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from agent import execute
from agent.execute import CommandError, Outcome, outcome_of, render_command, run, run_checked
from protocol.errors import ExitStatus, InvalidInputError

PY = sys.executable
AGENT = Path(execute.__file__).resolve().parent
posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX signals and process groups")


def _gone(pid: int) -> bool:
    """True when no live process has ``pid`` (a zombie waiting for a reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(*pids: int, within: float = 2.0) -> bool:
    until = time.monotonic() + within
    while time.monotonic() < until and not all(_gone(pid) for pid in pids):
        time.sleep(0.02)
    return all(_gone(pid) for pid in pids)


# A command that announces "ready" once its SIGINT handler is in place, then waits; on SIGINT
# it writes the marker file named in argv[1] and exits 130 (as restic does after removing its lock).
TRAPS_SIGINT = (
    "import signal, sys, time\n"
    "def on_int(*_):\n"
    "    open(sys.argv[1], 'w').write('lock removed')\n"
    "    sys.exit(130)\n"
    "signal.signal(signal.SIGINT, on_int)\n"
    "print('ready', flush=True)\n"
    "time.sleep(30)\n"
)


def _cancel_when_ready(cancel: threading.Event):
    """A line callback that sets ``cancel`` when the command says it is ready; ``lines`` ends with the time it did."""
    lines: list = []

    def on_line(line: str) -> None:
        lines.append(line)
        if line == "ready":
            cancel.set()
            lines.append(time.monotonic())

    return on_line, lines


def test_stdout_streams_to_the_file_and_the_result_says_how_it_went(tmp_path: Path):
    dest = tmp_path / "deep" / "out.txt"
    done = run((PY, "-c", "print('hello'); print('world')"), output=dest, timeout=5)
    assert dest.read_text() == "hello\nworld\n"
    assert done.exit_code == 0 and done.bytes_written == 12 and done.started
    assert not (done.timed_out or done.cancelled or done.truncated or done.not_found)
    assert done.outcome() is Outcome.OK and done.check() is Outcome.OK


@posix_only
def test_deadline_stops_the_whole_group_even_a_grandchild_that_ignores_sigterm(tmp_path: Path):
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(30)'],"
        " stdout=subprocess.PIPE)\n"
        "child.stdout.readline()\n"  # the grandchild ignores SIGTERM from here on
        "print(child.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    dest = tmp_path / "slow.txt"
    done = run((PY, "-c", script), output=dest, timeout=2.0, stop_signal=signal.SIGTERM, grace=0.4)
    grandchild = int(dest.read_text().split()[0])
    assert done.timed_out and not done.cancelled
    assert done.exit_code == -signal.SIGTERM  # the command itself took the polite signal
    assert 2.4 <= done.duration < 4.5, "the grandchild was killed before its grace period or far after"
    assert _wait_gone(done.pid, grandchild), "something of the group outlived the deadline"


def test_cap_truncates_at_exactly_the_cap_and_stops_the_command(tmp_path: Path):
    dest = tmp_path / "big.txt"
    endless = "import sys\nwhile True: sys.stdout.write('x' * 65536)"
    done = run((PY, "-c", endless), output=dest, timeout=10, max_bytes=100_000, grace=1)
    assert done.truncated and done.stopped_at_cap
    assert dest.stat().st_size == done.bytes_written == 100_000
    assert done.duration < 4
    assert done.outcome() is Outcome.ERROR


def test_lines_reach_the_callback_in_order_with_a_partial_last_line():
    lines: list[str] = []
    script = "import sys; sys.stdout.write('{\"n\": 1}\\n{\"n\": 2}\\r\\n\\nlast, no newline')"
    done = run((PY, "-c", script), on_line=lines.append, timeout=5)
    assert lines == ['{"n": 1}', '{"n": 2}', "", "last, no newline"]
    assert done.exit_code == 0 and not done.truncated
    assert done.bytes_written == len('{"n": 1}\n{"n": 2}\r\n\nlast, no newline')


def test_lines_past_the_cap_are_not_delivered_and_the_command_is_stopped():
    lines: list[str] = []
    endless = "import itertools\nfor n in itertools.count(): print(f'line {n}', flush=n < 3)"
    done = run((PY, "-c", endless), on_line=lines.append, timeout=10, max_bytes=1000, grace=1)
    assert done.truncated and done.stopped_at_cap and done.duration < 4
    assert lines == [f"line {n}" for n in range(len(lines))]  # in order, whole lines only
    assert done.bytes_written == sum(len(line) + 1 for line in lines) <= 1000 < done.bytes_written + 12


def test_a_failing_line_callback_stops_the_command_and_is_reraised():
    def explode(line: str) -> None:
        raise ValueError(f"cannot parse {line!r}")

    started = time.monotonic()
    with pytest.raises(ValueError, match="cannot parse 'garbage'"):
        run((PY, "-c", "import time; print('garbage', flush=True); time.sleep(30)"), on_line=explode,
            timeout=10, grace=1)
    assert time.monotonic() - started < 4


def test_stderr_tail_is_bounded_and_kept_while_stdout_is_drained(tmp_path: Path):
    script = "import sys; sys.stderr.write('e' * 1_000_000 + 'END'); sys.stdout.write('o' * 1_000_000)"
    done = run((PY, "-c", script), output=tmp_path / "o.txt", timeout=10)
    assert done.exit_code == 0
    assert len(done.stderr_tail) <= execute.STDERR_TAIL_BYTES
    assert done.stderr_tail.endswith("END")


@posix_only
def test_cancel_with_sigint_lets_the_command_clean_up(tmp_path: Path):
    marker = tmp_path / "marker"
    cancel = threading.Event()
    on_line, lines = _cancel_when_ready(cancel)
    done = run((PY, "-c", TRAPS_SIGINT, str(marker)), on_line=on_line, timeout=10, cancel=cancel,
               stop_signal=signal.SIGINT, grace=2)
    ended = time.monotonic()
    assert lines[0] == "ready"
    assert done.cancelled and not done.timed_out
    assert done.exit_code == 130
    assert marker.read_text() == "lock removed"
    assert ended - lines[1] < 1.5, "the command should have ended on the signal, not at the kill"
    with pytest.raises(CommandError) as caught:
        done.check()
    assert caught.value.status is ExitStatus.INTERRUPTED


@posix_only
def test_the_same_command_cancelled_with_sigterm_cannot_clean_up(tmp_path: Path):
    marker = tmp_path / "marker"
    cancel = threading.Event()
    on_line, _ = _cancel_when_ready(cancel)
    done = run((PY, "-c", TRAPS_SIGINT, str(marker)), on_line=on_line, timeout=10, cancel=cancel,
               stop_signal=signal.SIGTERM, grace=2)
    assert done.cancelled
    assert done.exit_code == -signal.SIGTERM
    assert not marker.exists()


@posix_only
def test_cancel_from_another_thread_then_kill_after_the_grace_period():
    ignores = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('ready', flush=True); " \
              "time.sleep(30)"
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def cancel_soon(line: str) -> None:  # from a timer thread, once SIGINT is ignored
        def fire() -> None:
            cancelled_at.append(time.monotonic())
            cancel.set()
        threading.Timer(0.1, fire).start()

    done = run((PY, "-c", ignores), on_line=cancel_soon, timeout=10, cancel=cancel,
               stop_signal=signal.SIGINT, grace=0.7)
    ended = time.monotonic()
    assert done.cancelled
    assert done.exit_code == -signal.SIGKILL
    assert 0.7 <= ended - cancelled_at[0] < 2.5, "killed before the grace period ended, or long after"
    assert _wait_gone(done.pid)


@posix_only
def test_an_interrupt_while_supervising_still_stops_the_command():
    pids: list[int] = []

    class InterruptedWhenReady(threading.Event):
        """Stands for a Ctrl-C arriving in the caller's thread while the command runs."""

        def is_set(self) -> bool:
            if pids:
                raise KeyboardInterrupt
            return False

    with pytest.raises(KeyboardInterrupt):
        run((PY, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(30)"),
            on_line=lambda line: pids.append(int(line)), timeout=10, cancel=InterruptedWhenReady(), grace=1)
    assert _wait_gone(pids[0], within=0.5)


@posix_only
def test_no_stop_signal_kills_at_once():
    started = time.monotonic()
    done = run((PY, "-c", "import time; time.sleep(30)"), timeout=0.5, stop_signal=None, grace=5)
    assert done.timed_out and done.exit_code == -signal.SIGKILL
    assert time.monotonic() - started < 2


def test_secrets_are_masked_in_the_command_line_the_log_and_the_error(caplog):
    script = "import sys; sys.stderr.write('auth failed for ' + sys.argv[1] + '\\n'); sys.exit(1)"
    argv = (PY, "-c", script, "--password=hunter2", "s3cr3t-token")
    caplog.set_level(logging.DEBUG, logger="helpline.execute")
    with pytest.raises(CommandError) as caught:
        run_checked(argv, timeout=5, secrets=("hunter2",), secret_args=(4,))
    error = caught.value
    logged = "\n".join(record.getMessage() for record in caplog.records if record.name == "helpline.execute")
    assert "running" in logged and "--password=***" in logged
    for text in (error.command, str(error), error.stderr_tail, logged):
        assert "hunter2" not in text and "s3cr3t-token" not in text
    assert error.exit_code == 1 and error.status is ExitStatus.ERROR
    assert "auth failed for --password=***" in str(error)
    assert error.command.endswith("'--password=***' '***'")


def test_a_secret_cut_where_the_stderr_tail_begins_is_masked_whole():
    secret = "hunter2-long-secret"
    after = execute.STDERR_TAIL_BYTES - 5  # the tail starts 5 bytes before the secret's end: "ecret"
    script = f"import sys; sys.stderr.write('x' * 100 + sys.argv[1] + 'B' * {after})"
    done = run((PY, "-c", script, secret), timeout=5, secrets=(secret,))
    assert done.stderr_tail == execute.MASK + "B" * after
    unmasked = run((PY, "-c", script, secret), timeout=5)
    assert unmasked.stderr_tail == "ecret" + "B" * after


def test_render_command_quotes_like_a_shell_and_masks():
    argv = ("restic", "-r", "s3:host/bucket", "--password-file", "/p w", "key=abc123")
    assert render_command(argv) == "restic -r s3:host/bucket --password-file '/p w' key=abc123"
    assert render_command(argv, secrets=("abc123", ""), secret_args=(4,)) == \
        "restic -r s3:host/bucket --password-file '***' 'key=***'"


def test_missing_binary_is_reported_not_raised(tmp_path: Path):
    dest = tmp_path / "never.txt"
    done = run(("helpline-no-such-binary-3f9a", "arg"), output=dest, timeout=5)
    assert done.not_found and not done.started and done.exit_code is None
    assert not dest.exists()
    with pytest.raises(CommandError, match="helpline-no-such-binary-3f9a is not installed") as caught:
        done.check()
    assert caught.value.status is ExitStatus.CONFIG and caught.value.hint


@posix_only
def test_binary_is_found_on_the_childs_path_and_env_and_cwd_apply(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    probe = bin_dir / "helpline-probe"
    probe.write_text(f"#!{PY}\nimport os\nprint(os.getcwd()); print(os.environ['HELPLINE_PROBE'])\n")
    probe.chmod(0o755)
    workdir = tmp_path / "work"
    workdir.mkdir()
    lines: list[str] = []
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HELPLINE_PROBE": "yes"}
    done = run(("helpline-probe",), on_line=lines.append, timeout=5, env=env, cwd=workdir)
    assert done.exit_code == 0
    assert lines == [str(workdir.resolve()), "yes"]
    assert run(("helpline-probe",), timeout=5).not_found  # not on our own PATH


def test_stdin_bytes_are_fed_and_otherwise_stdin_is_empty():
    echo = "import sys; print(repr(sys.stdin.read()))"
    fed: list[str] = []
    run((PY, "-c", echo), on_line=fed.append, timeout=5, stdin=b"secret\ninput")
    empty: list[str] = []
    run((PY, "-c", echo), on_line=empty.append, timeout=5)
    assert fed == ["'secret\\ninput'"] and empty == ["''"]


def test_argv_is_never_interpreted_by_a_shell():
    lines: list[str] = []
    run((PY, "-c", "import sys; print(sys.argv[1])", "$(echo pwned); echo x"), on_line=lines.append, timeout=5)
    assert lines == ["$(echo pwned); echo x"]


def test_exit_codes_map_through_the_callers_table():
    table = {0: Outcome.OK, 3: Outcome.WARNING}
    assert outcome_of(0) is Outcome.OK and outcome_of(3) is Outcome.ERROR and outcome_of(None) is Outcome.ERROR
    assert outcome_of(3, table) is Outcome.WARNING and outcome_of(1, table) is Outcome.ERROR
    warned = run_checked((PY, "-c", "import sys; sys.exit(3)"), exit_codes=table, timeout=5)
    assert warned.outcome(table) is Outcome.WARNING and warned.check(table) is Outcome.WARNING
    with pytest.raises(CommandError, match="exited with status 1") as caught:
        run_checked((PY, "-c", "import sys; sys.exit(1)"), exit_codes=table, timeout=5)
    assert caught.value.exit_code == 1
    with pytest.raises(CommandError, match="did not finish in time"):
        run_checked((PY, "-c", "import time; time.sleep(30)"), exit_codes=table, timeout=0.3, grace=0.5)


@pytest.mark.parametrize("argv, options", [
    ((), {"timeout": 1}),
    ("true --version", {"timeout": 1}),
    (("true",), {"timeout": 0}),
    (("true",), {"timeout": 1, "max_bytes": -1}),
    (("true",), {"timeout": 1, "grace": -1}),
    (("true",), {"timeout": 1, "output": Path("x"), "on_line": print}),
])
def test_wrong_calls_raise(argv, options):
    with pytest.raises(InvalidInputError):
        run(argv, **options)


SUBPROCESS_IMPORT = re.compile(r"^\s*(?:import\s[^#\n]*\bsubprocess\b|from\s+subprocess\b)", re.MULTILINE)


def test_only_the_executor_imports_subprocess_in_the_agent():
    importers = sorted(
        str(path.relative_to(AGENT.parent)) for path in AGENT.rglob("*.py")
        if SUBPROCESS_IMPORT.search(path.read_text(encoding="utf-8"))
    )
    # The session's PTY shell and a share's gathering process (this interpreter running Helpline's own module, spoken
    # to over pipes for as long as the command runs) are the other places: neither needs the executor.
    assert importers == [str(Path("agent", "execute.py")), str(Path("agent", "gathering.py")),
                         str(Path("agent", "session", "pty.py"))]


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfd is Linux's")
def test_the_supervisor_is_woken_by_the_exit_itself_not_by_polling():
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    watch = execute._ExitWatch(child)
    try:
        assert watch.fd is not None, "on Linux the exit is watched through a pidfd"
        watch.wait(0.01)
        assert child.poll() is None, "a short wait on a running child ends with the child still running"
        child.stdin.close()  # the child ends now
        watch.wait(60)  # returns at the exit, far sooner than this
        assert child.wait(timeout=5) == 0
    finally:
        watch.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert watch.fd is None


def test_process_exists_answers_for_a_running_an_ended_and_no_process():
    import subprocess

    from agent.execute import process_exists

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert process_exists(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not process_exists(child.pid)  # ended and reaped
    assert process_exists(os.getpid())
    assert process_exists(1)  # another user's (init) counts
    assert not process_exists(0) and not process_exists(-1)


def test_restic_s_lock_check_keeps_a_lock_whose_pid_names_no_process():
    from agent.snapshots.restic import run as restic_run

    assert restic_run.process_alive(0) and restic_run.process_alive(-5)
