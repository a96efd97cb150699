"""`helpline share` ends its process without the interpreter's teardown, once its threads and output are done."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ENDING = """
import sys, threading, time
from cli.main import _end_process

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
