#!/usr/bin/env python3
"""Load on the Helpline server: throughput and latency at 1, 10, 50 and 200 concurrent clients.

For each database (SQLite in the data directory, then a throwaway PostgreSQL
cluster on loopback) the script starts `helpline server run` on loopback, logs
in one engineer, opens a few tickets, and then, for each concurrency level,
has that many clients (one keep-alive connection each, in this process) send
``GET /v1/tickets`` with the engineer's token until ``--requests`` requests are
done or ``--seconds`` have passed. With ``--mixed`` a second workload sends one
``POST /v1/tickets`` in ten. It prints requests per second, p50 and p99 latency
and the errors (any answer but 2xx, or no answer within ``--timeout``), then
the verdicts: throughput at 50 clients at least that at 1, and no errors.

Exits 0 when it measured (whatever the verdicts: look for FAIL) and 1 when a
server could not be started at all. Run: ``.venv/bin/python bench/server_load.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from tests.support.live import ADMIN, ADMIN_PASSWORD, LiveServer  # noqa: E402

LEVELS = (1, 10, 50, 200)
ENGINEER, ENGINEER_PASSWORD = "bench-engineer", "bench-engineer-password"
SEED_TICKETS = 25
WRITE_EVERY = 10  # --mixed: one request in this many opens a ticket


class NotMeasured(RuntimeError):
    """A server for the benchmark could not be set up."""


@dataclass
class Level:
    """What one concurrency level did."""

    workload: str
    clients: int
    requests: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, p: float) -> float | None:
        return percentile(self.latencies_ms, p)

    def to_json(self) -> dict:
        data = asdict(self)
        del data["latencies_ms"]
        return {**data, "throughput_per_s": round(self.throughput, 1), "p50_ms": self.percentile(50), "p99_ms": self.percentile(99)}


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def drive(url: str, token: str, workload: str, clients: int, requests: int, seconds: float, timeout: float) -> Level:
    """Have ``clients`` concurrent clients send ``requests`` requests in all (or stop after ``seconds``)."""
    level = Level(workload, clients)
    headers = {"Authorization": f"Bearer {token}"}
    issued = 0
    started = time.monotonic()
    deadline = started + seconds

    async def client() -> None:
        # One client object per simulated client, one connection each: a shared pool of many
        # connections costs the benchmark's own CPU (it scans the pool per request), not the server's.
        nonlocal issued
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout,
                                     limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)) as api:
            while issued < requests and time.monotonic() < deadline:
                issued += 1
                write = workload == "mixed" and issued % WRITE_EVERY == 0
                sent = time.monotonic()
                try:
                    if write:
                        response = await api.post("/v1/tickets", json={"title": f"bench {issued}"})
                    else:
                        response = await api.get("/v1/tickets", params={"limit": 20})
                    ok, kind = response.is_success, f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    ok, kind = False, type(exc).__name__
                    if len(level.error_samples) < 3:
                        level.error_samples.append(f"{kind}: {exc!r} caused by {exc.__cause__!r} after {time.monotonic() - sent:.1f} s")
                level.requests += 1
                level.latencies_ms.append((time.monotonic() - sent) * 1000)
                if not ok:
                    level.errors += 1
                    level.error_kinds[kind] = level.error_kinds.get(kind, 0) + 1

    await asyncio.gather(*(client() for _ in range(clients)))
    level.elapsed_s = time.monotonic() - started
    return level


def _call(server: LiveServer, method: str, path: str, token: str | None = None, body: dict | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.request(method, f"{server.url}{path}", json=body, headers=headers, timeout=60)
    if not response.is_success:
        raise NotMeasured(f"{method} {path} answered {response.status_code}: {response.text[:200]}")
    return response.json()


def start_with_engineer(server: LiveServer) -> str:
    """Initialise and start ``server`` and make an engineer account; return the engineer's token."""
    server.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server.init()
        server.start()
    except RuntimeError as exc:
        raise NotMeasured(f"the server did not start: {str(exc)[:300]}") from exc
    admin = _call(server, "POST", "/v1/auth/login", body={"username": ADMIN, "password": ADMIN_PASSWORD})["token"]
    _call(server, "POST", "/v1/accounts", admin, {"username": ENGINEER, "password": ENGINEER_PASSWORD, "role": "engineer"})
    return _call(server, "POST", "/v1/auth/login", body={"username": ENGINEER, "password": ENGINEER_PASSWORD})["token"]


def prepare(server: LiveServer) -> str:
    """Start ``server``, make an engineer with a few tickets; return the engineer's token."""
    token = start_with_engineer(server)
    for i in range(SEED_TICKETS):
        _call(server, "POST", "/v1/tickets", token, {"title": f"seed ticket {i}", "requester": "bench"})
    return token


def measure_backend(server: LiveServer, args: argparse.Namespace) -> list[Level]:
    """Run every workload at every level against ``server`` (started here, stopped by the caller)."""
    token = prepare(server)
    asyncio.run(drive(server.url, token, "read", 4, args.warmup, args.seconds, args.timeout))
    levels = []
    for workload in ("read", "mixed") if args.mixed else ("read",):
        for clients in args.levels:
            level = asyncio.run(drive(server.url, token, workload, clients, max(args.requests, clients), args.seconds, args.timeout))
            log(f"  {workload:5} {clients:4} clients: {line(level)}")
            levels.append(level)
    return levels


def line(level: Level) -> str:
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"

    return (f"{level.requests} requests in {level.elapsed_s:.1f} s, {level.throughput:.0f} req/s, "
            f"p50 {ms(level.percentile(50))}, p99 {ms(level.percentile(99))}, errors {level.errors}"
            + (f" ({', '.join(f'{k}: {v}' for k, v in level.error_kinds.items())})" if level.errors else "")
            + "".join(f"\n    {sample}" for sample in level.error_samples))


def table(results: dict[str, list[Level]]) -> str:
    rows = ["| database | workload | clients | requests | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|---|"]
    for backend, levels in results.items():
        for lv in levels:
            p50, p99 = lv.percentile(50), lv.percentile(99)
            rows.append(f"| {backend} | {lv.workload} | {lv.clients} | {lv.requests} | {lv.throughput:.0f} | "
                        f"{'n/a' if p50 is None else f'{p50:.1f}'} | {'n/a' if p99 is None else f'{p99:.1f}'} | {lv.errors} |")
    return "\n".join(rows)


def verdicts(backend: str, levels: list[Level]) -> list[str]:
    """The target lines: throughput at 50 clients >= at 1 client (read workload), and no errors."""
    lines = []
    reads = {lv.clients: lv for lv in levels if lv.workload == "read"}
    if 1 in reads and 50 in reads:
        one, fifty = reads[1].throughput, reads[50].throughput
        lines.append(f"{backend}: throughput at 50 clients = {fifty:.0f} req/s, at 1 client = {one:.0f} req/s "
                     f"(target: 50 >= 1): {'PASS' if fifty >= one else 'FAIL'}")
    errors = sum(lv.errors for lv in levels)
    lines.append(f"{backend}: errors = {errors} of {sum(lv.requests for lv in levels)} requests (target 0): "
                 f"{'PASS' if errors == 0 else 'FAIL'}")
    return lines


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine_facts() -> dict:
    return {"hostname": platform.node(), "kernel": platform.release(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Throughput and latency of the Helpline server under concurrent clients.")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrent clients per level (default 1,10,50,200)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per level, at least one per client (default 1000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="a level stops after this long (default 30)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as an error (default 30)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests before the levels (default 50)")
    parser.add_argument("--databases", default="sqlite,postgresql", help="sqlite, postgresql or both (default both)")
    parser.add_argument("--mixed", action="store_true", help="also a workload with one POST /v1/tickets in ten")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--work-dir", type=Path, help="where to make the scratch directory (default: the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory and the server logs")
    args = parser.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        parser.error("--levels takes numbers separated by commas")
    args.databases = [x.strip() for x in args.databases.split(",") if x.strip()]
    if not args.levels or min(args.levels) < 1 or args.requests < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("levels and --requests must be 1 or more, --seconds above 0, --warmup 0 or more")
    if set(args.databases) - {"sqlite", "postgresql"}:
        parser.error("--databases takes sqlite and/or postgresql")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="helpline-load-", dir=args.work_dir))
    facts = machine_facts()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results: dict[str, list[Level]] = {}
    problems: dict[str, str] = {}
    # No access log: the figures are the server's, not its logging's. HELPLINE_* settings given to this
    # script (HELPLINE_DATABASE_POOL_SIZE, HELPLINE_WORKER_THREADS, ...) go to the server.
    quiet = {k: v for k, v in os.environ.items() if k.startswith("HELPLINE_")} | {"HELPLINE_LOG_LEVEL": "warning"}
    for backend in args.databases:
        log(f"{backend}: starting a server on loopback")
        cluster = None
        server = None
        try:
            url = None
            if backend == "postgresql":
                from tests.support.pgcluster import PgCluster, PgClusterError, find_bindir

                if find_bindir() is None:
                    raise NotMeasured("PostgreSQL server binaries are not installed")
                cluster = PgCluster()
                try:
                    cluster.start()
                    url = cluster.create_database("helpline_load")
                except PgClusterError as exc:
                    raise NotMeasured(f"PostgreSQL did not start: {str(exc)[:300]}") from exc
            server = LiveServer(data_dir=work / backend, database_url=url, env=quiet)
            results[backend] = measure_backend(server, args)
        except NotMeasured as exc:
            problems[backend] = str(exc)
            log(f"{backend}: NOT MEASURED: {exc}")
        finally:
            if server is not None:
                server.stop()
            if cluster is not None:
                cluster.stop()

    report = [
        f"server load on {facts['hostname']} ({facts['cpus']} CPUs, kernel {facts['kernel']}, Python {facts['python']}, "
        f"load average at start {' '.join(map(str, facts['loadavg']))})",
        f"GET /v1/tickets?limit=20 with one engineer token ({SEED_TICKETS} tickets); per level at most "
        f"{args.requests} requests or {args.seconds:.0f} s; client and server on this machine",
        "",
        table(results),
        "",
        *[v for backend, levels in results.items() for v in verdicts(backend, levels)],
        *[f"{backend}: NOT MEASURED: {reason}" for backend, reason in problems.items()],
    ]
    print("\n".join(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "started_at": started, "machine": facts,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "results": {b: [lv.to_json() for lv in levels] for b, levels in results.items()},
            "not_measured": problems,
        }, indent=2) + "\n")
        print(f"figures written to {args.json}")
    if args.keep or problems:
        print(f"logs and scratch files kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
