#!/usr/bin/env python3
"""An engineer's latency while strangers flood the login with wrong passwords.

The script starts `helpline server run` on loopback (SQLite in a scratch data
directory), logs in one engineer, and measures that engineer's ``GET /v1/me``
(one request at a time, p50/p90/max) first alone and then while a flood of
failed ``POST /v1/auth/login`` requests arrives at ``--rate`` per second. It
prints both, and the ratio of the flooded figures to the quiet ones.

The server is started with the login rate limits raised (unless ``--keep-limits``)
so that every flooding request reaches password hashing, as it would for an
attacker with many addresses: the figure is the cost of the hashing itself,
not of the cheap refusals a limit answers with.

Exits 0 when it measured, 1 when the server could not be started.
Run: ``.venv/bin/python bench/login_flood.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.server_load import ENGINEER, NotMeasured, percentile, start_with_engineer  # noqa: E402
from tests.support.live import LiveServer  # noqa: E402

FLOOD_IN_FLIGHT = 64  # failed logins waiting for an answer at once, at most (the rest are dropped and counted)
RAISED_LIMITS = {  # every flooding request reaches the password check (names of this and earlier versions)
    f"HELPLINE_RATE_LIMITS__{name}": "1000000000"
    for name in ("LOGIN_PER_USER", "LOGIN_PER_IP", "LOGIN_PER_USER_ADDRESS", "LOGIN_PER_ADDRESS", "LOGIN_PER_NETWORK",
                 "LOGIN_PER_USER_FREE")
}


async def probe(url: str, token: str, seconds: float, timeout: float) -> list[float]:
    """The engineer's ``GET /v1/me``, one after another for ``seconds``; their latencies in ms."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as api:
        while time.monotonic() < deadline:
            sent = time.monotonic()
            response = await api.get("/v1/me")
            if not response.is_success:
                raise NotMeasured(f"GET /v1/me answered {response.status_code}: {response.text[:200]}")
            latencies.append((time.monotonic() - sent) * 1000)
            await asyncio.sleep(0.02)  # an engineer's tool, not a load generator
    return latencies


async def flood(url: str, rate: float, seconds: float, timeout: float, tally: dict[str, int]) -> None:
    """Send failed logins at ``rate`` per second for ``seconds`` (open loop: each on its own schedule)."""
    in_flight = asyncio.Semaphore(FLOOD_IN_FLIGHT)
    tasks: list[asyncio.Task] = []

    async with httpx.AsyncClient(base_url=url, timeout=timeout,
                                 limits=httpx.Limits(max_connections=FLOOD_IN_FLIGHT)) as api:
        async def one(i: int) -> None:
            async with in_flight:
                try:
                    response = await api.post("/v1/auth/login", json={"username": ENGINEER, "password": f"wrong-password-{i}"})
                    kind = str(response.status_code)
                except httpx.HTTPError as exc:
                    kind = type(exc).__name__
                tally[kind] = tally.get(kind, 0) + 1

        started = time.monotonic()
        for i in range(max(1, int(rate * seconds))):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight.locked():
                tally["dropped"] = tally.get("dropped", 0) + 1
                continue
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)


async def flooded(url: str, token: str, rate: float, seconds: float, timeout: float) -> tuple[list[float], dict[str, int]]:
    tally: dict[str, int] = {}
    flooding = asyncio.create_task(flood(url, rate, seconds + 2, timeout, tally))
    await asyncio.sleep(1.0)  # let the flood reach its rate first
    latencies = await probe(url, token, seconds, timeout)
    await flooding
    return latencies, tally


def figures(latencies: list[float]) -> dict[str, float]:
    return {"n": len(latencies), "p50": percentile(latencies, 50), "p90": percentile(latencies, 90), "max": max(latencies)}


def describe(name: str, f: dict[str, float]) -> str:
    return f"{name:28} n={f['n']:4}  p50 {f['p50']:7.1f} ms  p90 {f['p90']:7.1f} ms  max {f['max']:7.1f} ms"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="An engineer's GET /v1/me latency alone and under a flood of failed logins.")
    parser.add_argument("--rate", type=float, default=14.0, help="failed logins per second during the flood (default 14)")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each measurement lasts (default 15)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a request is given up (default 30)")
    parser.add_argument("--keep-limits", action="store_true", help="keep the server's default login limits")
    parser.add_argument("--work-dir", type=Path, help="where to make the scratch directory (default: the temp dir)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="helpline-login-flood-", dir=args.work_dir))
    env = {k: v for k, v in os.environ.items() if k.startswith("HELPLINE_")} | {"HELPLINE_LOG_LEVEL": "warning"}
    if not args.keep_limits:
        env |= RAISED_LIMITS
    server = LiveServer(data_dir=work / "sqlite", env=env)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        token = start_with_engineer(server)
        quiet = figures(asyncio.run(probe(server.url, token, args.seconds, args.timeout)))
        latencies, tally = asyncio.run(flooded(server.url, token, args.rate, args.seconds, args.timeout))
        loud = figures(latencies)
    except NotMeasured as exc:
        print(f"NOT MEASURED: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"login flood on {platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average at start {load}); SQLite; {args.seconds:.0f} s per measurement")
    print(describe("GET /v1/me alone", quiet))
    print(describe(f"GET /v1/me, {args.rate:g} failed/s", loud))
    print("failed logins answered: " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.items())))
    print(f"ratio flooded/alone: p50 {loud['p50'] / quiet['p50']:.1f}x  p90 {loud['p90'] / quiet['p90']:.1f}x  "
          f"max {loud['max'] / quiet['max']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
