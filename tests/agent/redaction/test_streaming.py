"""A 50 MB log is scrubbed in streaming fashion: bounded memory, every planted secret gone.

The redaction runs in a child process that reports its own peak resident memory (VmHWM),
which counts everything (C buffers included) without the slowdown of tracing every
allocation; a second child scrubbing a tiny file gives the baseline (interpreter, imports).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.redaction import SCRUBBED

MB = 1 << 20
REPO = Path(__file__).resolve().parents[3]
CHILD = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from agent.redaction import Redactor\n"
    "result = Redactor().redact_file(Path(sys.argv[1]), Path(sys.argv[2]))\n"
    "peak = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
    "print(json.dumps({'status': result.status, 'counts': result.counts, 'reason': result.reason, 'peak': peak}))\n"
)

# Typical journal lines; several hold trigger words (session, password, key) without secrets.
TEMPLATES = [
    "{ts} pc42 kernel: [{n}.{m}] usb 1-2: new high-speed USB device number {d} using xhci_hcd",
    "{ts} pc42 systemd[1]: Started fwupd.service - Firmware update daemon.",
    "{ts} pc42 systemd[1]: packagekit.service: Deactivated successfully.",
    "{ts} pc42 NetworkManager[850]: <info>  [{n}.{m}] device (wlp2s0): state change: ip-config -> ip-check",
    "{ts} pc42 gnome-shell[1800]: Window manager warning: Overwriting existing binding of keysym 31",
    "{ts} pc42 CRON[{n}]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
    "{ts} pc42 app[3000]: GET /api/v1/tickets/{n} 200 {d}ms",
    "{ts} pc42 app[3000]: worker {d} finished job {n} in {m}ms",
    "{ts} pc42 chronyd[700]: Selected source 192.0.2.{d} (2.debian.pool.ntp.org)",
    "{ts} pc42 CRON[{n}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
    "{ts} pc42 sshd[{n}]: Failed password for invalid user admin from 203.0.113.{d} port {n} ssh2",
]


def _block(rng: random.Random, size: int) -> str:
    lines, total, i = [], 0, 0
    while total < size:
        ts = f"Mar 01 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
        line = rng.choice(TEMPLATES).format(ts=ts, n=rng.randrange(10**6), m=rng.randrange(10**6), d=rng.randrange(200))
        lines.append(line + "\n")
        total += len(line) + 1
        i += 1
    return "".join(lines)


def _secret_lines(k: int) -> tuple[str, list[str]]:
    password, token = f"Str3am-Pw-{k:04d}", "ghp_" + f"{k:04d}".rjust(36, "Z")
    key_body = [f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC{k:04d}" + "x" * 28 for _ in range(40)]
    text = (
        f"Mar 01 12:00:00 pc42 app[3000]: DEBUG connecting with password={password} token {token}\n"
        "-----BEGIN PRIVATE KEY-----\n" + "".join(f"{line}\n" for line in key_body) + "-----END PRIVATE KEY-----\n"
    )
    return text, [password, token, key_body[0], key_body[-1]]


def _redact_in_child(src: Path, dst: Path) -> tuple[dict, int, float]:
    """Return (result, peak resident bytes, seconds) of redact_file run in a fresh interpreter."""
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(dst)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        check=True,
    )
    elapsed = time.perf_counter() - started
    result = json.loads(child.stdout)
    return result, result.pop("peak"), elapsed


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak memory from /proc (Linux)")
def test_fifty_megabyte_log_streams_in_bounded_memory(tmp_path, record_property):
    rng = random.Random(42)
    block = _block(rng, MB)
    src, dst = tmp_path / "journal.log", tmp_path / "out" / "journal.log"
    planted: list[str] = []
    with open(src, "w", encoding="utf-8") as f:
        for k in range(50):
            secret_text, values = _secret_lines(k)
            f.write(block + secret_text)  # the key spans a streaming chunk boundary now and then
            planted += values
    size = src.stat().st_size
    assert size >= 50 * MB
    (tmp_path / "tiny.log").write_text("password=x1\n")

    _, baseline, _ = _redact_in_child(tmp_path / "tiny.log", tmp_path / "tiny.out")
    result, peak, elapsed = _redact_in_child(src, dst)
    record_property("throughput_mb_per_s", round(size / MB / elapsed, 1))
    record_property("peak_rss_above_baseline_mb", round((peak - baseline) / MB, 1))

    assert result["status"] == SCRUBBED, result
    assert result["counts"] == {"password": 50, "github-token": 50, "private-key": 50}
    assert peak - baseline < 20 * MB, f"{(peak - baseline) / MB:.1f} MB above the {baseline / MB:.0f} MB baseline"
    leaked = set()
    with open(dst, encoding="utf-8") as f:
        for chunk in iter(lambda: f.read(4 * MB), ""):
            leaked |= {value for value in planted if value in chunk}
    assert leaked == set()
    assert dst.stat().st_size > size - 50 * 50 * 80  # only the key lines went away
