"""What runs on the PC and what eats it: the top CPU and memory consumers, counts, zombies.

CPU percentages need two readings
:data:`~agent.diagnostics.cpu_sample.SAMPLE_SECONDS` apart (or
:data:`~agent.diagnostics.cpu_sample.MIN_SAMPLE_SECONDS`, once every other
collector is done), so a process that spins right now shows up even if it
started seconds ago. The first
reading is the run's early :class:`~agent.diagnostics.cpu_sample.CpuSample` when
the share took one (then the collector waits only for the rest of the interval),
else one the collector takes itself.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import psutil

from ..context import CollectContext
from ..cpu_sample import CpuSample
from .base import ALL_PLATFORMS, Collector, iso_utc

TOP_N = 15
CMDLINE_CHARS = 300
_ATTRS = ["pid", "ppid", "name", "username", "status", "create_time", "num_threads", "memory_info",
          "memory_percent", "cmdline"]


class ProcessesCollector(Collector):
    """The process table through psutil, the same on every platform."""

    name = "processes"
    category = "processes"
    description = f"Top {TOP_N} processes by CPU and by memory, process counts by state, and zombies."
    platforms = ALL_PLATFORMS
    timeout = 8.0

    def collect(self, ctx: CollectContext) -> dict[str, Any]:
        sample = ctx.cpu_sample if ctx.cpu_sample is not None and ctx.cpu_sample.fresh() else CpuSample()
        # The table is read while the interval runs: after it only the CPU readings are left to take,
        # so a share waits for nothing but those once the interval is over.
        table = []
        for proc in psutil.process_iter(_ATTRS, ad_value=None):
            info = proc.info
            memory = info.get("memory_info")
            cmdline = info.get("cmdline")
            table.append({
                "pid": info["pid"],
                "ppid": info.get("ppid"),
                "name": info.get("name"),
                "username": info.get("username"),
                "status": info.get("status"),
                "cpu_percent": None,
                "rss": memory.rss if memory else None,
                "memory_percent": round(info["memory_percent"], 2) if info.get("memory_percent") is not None else None,
                "threads": info.get("num_threads"),
                "started": iso_utc(info.get("create_time")),
                "cmdline": " ".join(cmdline)[:CMDLINE_CHARS] if cmdline else None,
            })
        sample.wait(ctx.remaining() - 1.0, ctx.last_one)
        total_cpu = sample.total_percent()
        interval = sample.age()
        for row in table:  # a process that ended meanwhile keeps its row, with no percentage
            row["cpu_percent"] = sample.process_percent(row["pid"])

        ctx.write_json("processes/processes.json", table, source="python:psutil")
        by_cpu = sorted((p for p in table if p["cpu_percent"] is not None), key=lambda p: -p["cpu_percent"])
        by_memory = sorted((p for p in table if p["rss"] is not None), key=lambda p: -p["rss"])
        states = Counter(p["status"] or "unknown" for p in table)
        return {
            "count": len(table),
            "by_status": dict(states),
            "threads": sum(p["threads"] or 0 for p in table),
            "cpu_percent_total": total_cpu,
            "cpu_sample_seconds": round(interval, 2),
            "top_cpu": [_summary(p) for p in by_cpu[:TOP_N]],
            "top_memory": [_summary(p) for p in by_memory[:TOP_N]],
            "zombies": [{"pid": p["pid"], "ppid": p["ppid"], "name": p["name"]}
                        for p in table if p["status"] == psutil.STATUS_ZOMBIE],
        }


def _summary(proc: dict[str, Any]) -> dict[str, Any]:
    return {key: proc[key] for key in ("pid", "name", "username", "cpu_percent", "rss", "memory_percent", "cmdline")}
