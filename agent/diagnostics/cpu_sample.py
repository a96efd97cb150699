"""The first of the two readings that CPU percentages need, taken as early as a share can take it.

CPU use is a rate, so it is measured between two readings of the CPU times of
the PC and of each process. Taking both inside the processes collector made it
sleep :data:`SAMPLE_SECONDS` while every other collector had long finished.
A share's gathering process takes a :class:`CpuSample` first thing
(:mod:`agent.share_worker`, before it loads its code) and hands it to
:func:`agent.diagnostics.collect`; the collector then waits only for what is
left of the interval. Without an early sample the collector starts its own and
waits the whole interval, as before. This module loads nothing but psutil, so
starting a sample costs a pass over the process table and no imports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil

#: The interval CPU percentages are measured over while other collectors still work (it costs nothing then).
SAMPLE_SECONDS = 0.3
#: The shortest interval: once the processes collector is the last one left, it waits no longer than this.
#: CPU times count in ticks of 10 ms, so over 0.2 s a process's share reads to within 5 points of one CPU.
MIN_SAMPLE_SECONDS = 0.2
#: A sample older than this measures minutes-old history, not "now": the collector starts a fresh one.
STALE_SECONDS = 30.0

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


class CpuSample:
    """The first reading of an interval: the PC's CPU times and each readable process, primed.

    Safe to hand from one thread to another (psutil's module-level
    ``cpu_percent`` keeps one reading per thread; this keeps its own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.started = clock()
        self._times = psutil.cpu_times()
        self.processes: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            try:
                proc.cpu_percent(None)  # the first call only starts the measurement
            except _GONE:
                continue
            self.processes[proc.pid] = proc

    def age(self) -> float:
        """Seconds since the first reading."""
        return self._clock() - self.started

    def fresh(self) -> bool:
        """Whether this sample still measures "now" (see :data:`STALE_SECONDS`)."""
        return self.age() < STALE_SECONDS

    def wait_time(self, budget: float, seconds: float = SAMPLE_SECONDS) -> float:
        """How long to sleep before the second reading: what is left of ``seconds``, at most ``budget``."""
        return max(0.0, min(seconds - self.age(), budget))

    def wait(self, budget: float, last_one: threading.Event | None = None,
             sleep: Callable[[float], None] = time.sleep) -> None:
        """Wait until the second reading is due, at most ``budget`` seconds.

        That is :data:`SAMPLE_SECONDS` after the first, or :data:`MIN_SAMPLE_SECONDS`
        once ``last_one`` is set (the caller is the last collector still working: a
        longer interval would only keep the share waiting). Without ``last_one``, the
        whole interval.
        """
        if last_one is None:
            sleep(self.wait_time(budget))
            return
        started = self._clock()
        sleep(self.wait_time(budget, MIN_SAMPLE_SECONDS))
        rest = min(self.wait_time(budget), max(0.0, budget - (self._clock() - started)))
        if rest > 0:
            last_one.wait(rest)

    def total_percent(self) -> float:
        """The PC's CPU use since the first reading, 0–100 over all CPUs (0.0 if no time has passed)."""
        return busy_percent(self._times, psutil.cpu_times())

    def process_percent(self, pid: int) -> float | None:
        """A process's CPU use since the first reading (100 is one full CPU); None if it was not primed or is gone."""
        proc = self.processes.get(pid)
        if proc is None:
            return None
        try:
            return round(proc.cpu_percent(None), 1)
        except _GONE:
            return None


def busy_percent(before, after) -> float:
    """The share of CPU time spent busy between two ``psutil.cpu_times()`` readings, in percent."""
    deltas = {name: max(0.0, getattr(after, name) - getattr(before, name)) for name in before._fields}
    total = sum(deltas.values())
    # On Linux guest time is already counted in user and nice time.
    total -= deltas.get("guest", 0.0) + deltas.get("guest_nice", 0.0)
    busy = total - deltas.get("idle", 0.0) - deltas.get("iowait", 0.0)
    if total <= 0:
        return 0.0
    return round(min(100.0, max(0.0, busy / total * 100)), 1)
