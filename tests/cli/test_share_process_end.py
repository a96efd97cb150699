"""`helpline share`, `restore` and `snapshot` end their processes without the interpreter's teardown, once its threads and output are done."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ENDING = """
import atexit, sys, threading, time
from cli.main import _end_process

atexit.register(lambda: open(sys.argv[1] + ".exit", "w").write("handled"))

def late():
    time.sleep(0.2)
    open(sys.argv[1], "w").write("done")

threading.Thread(target=late).start()
sys.stdout.write("said without a newline")
sys.stderr.write("and a warning")
_end_process(3)
"""


def test_the_status_is_kept_output_flushed_and_threads_waited_for(tmp_path) -> None:
    marker = tmp_path / "late.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": ""}
    done = subprocess.run([sys.executable, "-c", ENDING, str(marker)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "said without a newline" and done.stderr == "and a warning"
    assert marker.read_text() == "done", "a thread that is not a daemon finishes before the process ends"
    assert Path(f"{marker}.exit").read_text() == "handled", "the exit handlers run"


EARLY = """
import sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
from agent import gathering
seen = []
real = gathering.spawn_early
gathering.spawn_early = lambda: seen.append(sorted(m for m in ("typer", "rich", "cli.output") if m in sys.modules)) or real()
import cli.main
print(seen, bool(gathering._EARLY), cli.main.gc.isenabled())
"""


def test_the_installed_share_starts_its_gathering_process_before_the_command_loads() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("_HELPLINE_COMPLETE", None)

    def load(*argv: str) -> str:
        done = subprocess.run([sys.executable, "-c", EARLY, *argv], capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert load("/usr/local/bin/helpline", "share", "--yes") == "[[]] True False"
    assert load("/usr/local/bin/helpline", "--debug", "share") == "[[]] True False"
    assert load("/usr/local/bin/helpline", "share", "--help") == "[] False False", "help gathers nothing"
    assert load("/usr/local/bin/helpline", "share", "-h") == "[] False False"
    assert load("/usr/local/bin/helpline", "share", "--send-queued") == "[] False False", "nor does sending the queue"
    assert load("/usr/local/bin/helpline", "status") == "[] False True", "other commands start no process"
    assert load("/usr/bin/pytest", "share") == "[] False True", "importing the module is not running the command"


IN_PROCESS = """
import gc, sys
from cli.main import main
try:
    main(["share", "--yes", "--output", sys.argv[1], "--what", "x", "--since", "now", "--tried", "y", "-x", "processes",
          "-x", "software", "-x", "logs", "-x", "crashes"])
except SystemExit as exc:
    print("status", exc.code, "collector on", gc.isenabled())
"""


def test_a_share_run_inside_another_program_gives_it_back_the_cycle_collector(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HELPLINE_CONFIG_DIR": str(tmp_path / "config"),
           "HELPLINE_AGENT_DIR": str(tmp_path / "agent")}
    done = subprocess.run([sys.executable, "-c", IN_PROCESS, str(tmp_path / "bundle.tar.gz")], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "status 0 collector on True", done.stderr[-2000:]
    assert (tmp_path / "bundle.tar.gz").is_file()
