"""Measure one command run: wall time, peak memory of its whole process tree, exit status.

Given an argv, :func:`measure` starts it in its own session, samples the RSS of
the process and every descendant every ``interval`` seconds from a background
thread, and waits for its end (a blocking wait, so the end is seen at once);
past the timeout it kills the whole tree.
The peak is the largest *sum* over one sample, so memory held by children
counts, and shared pages count once per process that maps them (RSS, not PSS):
it is an upper bound, the same for every tool measured. One exception: a child
that still shares its parent's address space (Python's subprocess vforks, and
the child keeps the parent's memory until it execs the command) is the same
memory, not more, so on Linux it is recognised with kcmp(2) and not added. A
child that lives and dies between two samples is not seen.

The summary and verdict helpers format the figures the benchmark prints.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

DEFAULT_INTERVAL = 0.020
MB = 1_000_000  # figures are printed in MB (10^6 bytes), as the targets are stated
TAIL_CHARS = 2000
_KCMP_SYSCALL = {"x86_64": 312, "aarch64": 272}
_KCMP_VM = 1

SameAddressSpace = Callable[[int, int], bool]


@functools.cache
def kcmp_same_address_space() -> SameAddressSpace | None:
    """Return a test of whether two PIDs share one address space (Linux kcmp(2)), None where unavailable."""
    number = _KCMP_SYSCALL.get(platform.machine()) if os.name == "posix" and os.uname().sysname == "Linux" else None
    if number is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None

    def same(pid_a: int, pid_b: int) -> bool:
        return libc.syscall(number, pid_a, pid_b, _KCMP_VM, 0, 0) == 0  # -1 (error) counts as "not shared"

    return same if same(os.getpid(), os.getpid()) else None  # no kcmp in this kernel, or not allowed


@dataclass
class Run:
    """What one run of a command did and cost."""

    argv: list[str]
    returncode: int | None  # None: killed on timeout
    wall_s: float
    peak_rss_bytes: int
    peak_processes: int  # most processes seen alive in one sample
    samples: int
    peak_single_rss_bytes: int = 0  # the largest RSS of any one process in the tree
    shared_address_space_seen: int = 0  # child observations not added: they were their parent's memory
    sampler_cpu_s: float = 0.0
    timed_out: bool = False
    stdout_tail: str = ""
    stderr_tail: str = ""
    archive_bytes: int | None = None
    archive_path: str | None = None
    loadavg_before: tuple[float, float, float] | None = None
    problem: str | None = None  # set by the caller when a run that exited 0 did not do its job

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.problem is None

    def failure(self) -> str:
        """One line saying why this run did not succeed ("" if it did)."""
        if self.problem:
            return self.problem
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f} s and was killed"
        if self.returncode != 0:
            last = (self.stderr_tail.strip() or self.stdout_tail.strip()).splitlines()[-1:] or ["(no output)"]
            return f"exited with status {self.returncode}: {last[0]}"
        return ""

    def to_json(self) -> dict:
        return asdict(self)


class TreeSampler(threading.Thread):
    """Sample the summed RSS of a process and its descendants until stopped."""

    def __init__(self, pid: int, interval: float = DEFAULT_INTERVAL,
                 same_address_space: SameAddressSpace | None = None):
        super().__init__(name=f"rss-sampler-{pid}", daemon=True)
        self.pid = pid
        self.interval = interval
        self.same_address_space = same_address_space
        self.shared_seen = 0
        self.peak_rss = 0
        self.peak_processes = 0
        self.peak_single_rss = 0  # the largest one process reached, to read the sum against
        self.samples = 0
        self.cpu_s = 0.0  # CPU time the sampling itself took, to judge its cost
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join()

    def sample(self) -> int:
        """Take one sample now; return the summed RSS in bytes (0 once the tree is gone)."""
        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        alive = 0
        for proc in tree:
            try:
                if (proc.pid != self.pid and self.same_address_space is not None
                        and self.same_address_space(proc.ppid(), proc.pid)):
                    self.shared_seen += 1
                    alive += 1
                    continue
                rss = proc.memory_info().rss
                total += rss
                alive += 1
                self.peak_single_rss = max(self.peak_single_rss, rss)
            except psutil.Error:  # exited since the listing
                continue
        self.samples += 1
        self.peak_rss = max(self.peak_rss, total)
        self.peak_processes = max(self.peak_processes, alive)
        return total

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._stopping.is_set():
            self.sample()
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:  # a slow sample: keep the cadence instead of bursting to catch up
                next_at = time.monotonic()
                delay = 0
            self._stopping.wait(delay)
        self.cpu_s = time.thread_time()


def kill_tree(pid: int) -> None:
    """Kill a process, its process group and any descendant that left the group."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for proc in descendants:
        try:
            proc.kill()
        except psutil.Error:
            pass


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - TAIL_CHARS))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def measure(
    argv: Sequence[str],
    *,
    timeout: float,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    interval: float = DEFAULT_INTERVAL,
    name: str = "run",
) -> Run:
    """Run ``argv`` to completion or ``timeout``; return its wall time, peak tree RSS and exit status.

    Output goes to ``log_dir/NAME.stdout`` and ``.stderr`` (files, not pipes, so
    a chatty command never blocks on us); stdin is /dev/null so a prompt fails
    fast instead of hanging. Raise OSError if the command cannot be started.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    loadavg = os.getloadavg()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )
        sampler = TreeSampler(proc.pid, interval, kcmp_same_address_space())
        sampler.start()
        # A blocking wait sees the end at once; a wait with a timeout polls, up to 50 ms apart, and would add
        # up to 50 ms to a run (a 0.47 s run read 0.47 or 0.52 s by where its end fell between two polls).
        # The timeout is a timer of its own that kills the tree.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            kill_tree(proc.pid)

        watchdog = threading.Timer(timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            proc.wait()
        except BaseException:  # Ctrl-C: leave nothing running behind us
            watchdog.cancel()
            sampler.stop()
            kill_tree(proc.pid)
            proc.wait()
            raise
        wall = time.monotonic() - start
        watchdog.cancel()
        timed_out = expired.is_set()
        if sampler.is_alive():
            sampler.stop()
        # Do not leave behind anything the command left running in its group. The group
        # ID cannot be reused while a member lives, so this reaches only what we started.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return Run(
        argv=list(argv),
        returncode=None if timed_out else proc.returncode,
        wall_s=wall,
        peak_rss_bytes=sampler.peak_rss,
        peak_processes=sampler.peak_processes,
        peak_single_rss_bytes=sampler.peak_single_rss,
        shared_address_space_seen=sampler.shared_seen,
        samples=sampler.samples,
        sampler_cpu_s=round(sampler.cpu_s, 3),
        timed_out=timed_out,
        stdout_tail=_tail(out_path),
        stderr_tail=_tail(err_path),
        loadavg_before=tuple(round(x, 2) for x in loadavg),
    )


@dataclass
class Summary:
    """Median and extremes over the successful runs of one tool."""

    runs_ok: int
    runs_failed: int
    wall_s_median: float | None = None
    wall_s_min: float | None = None
    peak_rss_bytes_median: float | None = None
    peak_rss_bytes_max: int | None = None
    archive_bytes_median: float | None = None
    failures: list[str] = field(default_factory=list)


def summarize(runs: Sequence[Run]) -> Summary:
    """Summarize successful runs; failed ones only count and say why."""
    good = [r for r in runs if r.ok]
    summary = Summary(runs_ok=len(good), runs_failed=len(runs) - len(good),
                      failures=[r.failure() for r in runs if not r.ok])
    if good:
        summary.wall_s_median = statistics.median(r.wall_s for r in good)
        summary.wall_s_min = min(r.wall_s for r in good)
        summary.peak_rss_bytes_median = statistics.median(r.peak_rss_bytes for r in good)
        summary.peak_rss_bytes_max = max(r.peak_rss_bytes for r in good)
        sizes = [r.archive_bytes for r in good if r.archive_bytes is not None]
        summary.archive_bytes_median = statistics.median(sizes) if sizes else None
    return summary


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is unknown or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _shown(value: float, decimals: int, passes: bool, check) -> str:
    """Format ``value`` with enough decimals that the printed number gives the same verdict."""
    for places in range(decimals, decimals + 5):
        text = f"{value:.{places}f}"
        if check(float(text)) == passes:
            return text
    return f"{value!r}"


def verdict_line(label: str, value: float | None, target: float, *, op: str, unit: str = "",
                 decimals: int = 2) -> str:
    """Return e.g. ``wall time ratio helpline/sos = 0.09 (target ≤ 0.20): PASS``.

    ``op`` is ``"<="`` or ``"<"``; ``unit`` follows the numbers (" MB"). A value
    of None prints ``n/a`` and ``NOT MEASURED``. The value is shown with more
    decimals when rounding would make it look like it contradicts the verdict.
    """
    checks = {"<=": lambda v: v <= target, "<": lambda v: v < target}
    symbols = {"<=": "≤", "<": "<"}
    check = checks[op]
    target_text = f"{target:.{decimals}f}{unit}"
    if value is None:
        return f"{label} = n/a (target {symbols[op]} {target_text}): NOT MEASURED"
    passes = check(value)
    shown = _shown(value, decimals, passes, check)
    return f"{label} = {shown}{unit} (target {symbols[op]} {target_text}): {'PASS' if passes else 'FAIL'}"


def info_line(label: str, value: float | None, decimals: int = 2) -> str:
    """Return e.g. ``archive size ratio = 0.20`` (``n/a`` when unknown); no target, no verdict."""
    return f"{label} = {'n/a' if value is None else f'{value:.{decimals}f}'}"


def tree_digest(root: Path) -> str:
    """One SHA-256 over every file's relative path and content under ``root``, to compare a restore with the original."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
