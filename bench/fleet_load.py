#!/usr/bin/env python3
"""A fleet against one server: N simulated agents enrolled and kept connected, requests delivered to them.

The script starts `helpline server run` on loopback (one process, SQLite in a
scratch data directory by default; ``--database postgresql`` on a throwaway
cluster, or ``--database-url``), or targets a running server (``--url``). It
raises its open-file limit (and so the server child's) to the hard limit, then:

1. enrolls ``--agents`` PCs through the real enrollment route, each with its
   own Ed25519 key and identity (concurrent, at most ``--enroll-concurrency``
   at once), checking each answer as the agent does (``agent.link.accept_credential``);
2. keeps every agent connected: each holds the real request long poll
   (``GET /v1/agent/requests?wait=``), signed by ``agent.http.AgentSigner``
   as the agent signs it, its answer checked against the pinned server key,
   and polls again when it returns after the agent's own jitter
   (``agent.service.channel``), backing off after errors as the agent does;
3. once every agent has connected, measures for ``--duration`` seconds:
   completed polls (check-ins) per second, errors, polls held open, the
   server's resident memory (psutil, sampled), while an admin creates
   ``--requests`` PC requests, evenly spread, for random agents; each
   request's delivery latency is the time from its create call returning to
   the agent's poll receiving it.

It prints a table and the verdicts against the target: 5,000 agents held by one
server process in under 1 GiB, request delivery p99 under 2 s. There is no
peer agent to run side by side, so the figures are absolute; ``--baseline``
also measures the floor, a bare uvicorn app on the same settings holding as
many plain long polls, and prints Helpline's memory as a ratio of it.

Everything is bounded: ``--duration``, a global deadline, every loop. Exits 0
when it measured (look for FAIL), 1 when the server could not be set up.
Run: ``.venv/bin/python bench/fleet_load.py --agents 5000 --duration 60``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# httpcore asks sniffio which async library runs at every request; where sniffio is not installed, that
# failed import searches sys.path every time (a tenth of this process's CPU with thousands of agents).
# Recording the absence once makes it fail at once; httpcore then assumes asyncio, which is what runs here.
try:
    import sniffio  # noqa: F401
except ImportError:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

import httpx  # noqa: E402
import psutil  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from agent import __version__ as AGENT_VERSION  # noqa: E402
from agent.http import AgentSigner, _target  # noqa: E402
from agent.link import accept_credential  # noqa: E402
from agent.service.channel import BACKOFF_FIRST, BACKOFF_MAX, POLL_JITTER  # noqa: E402
from protocol import agent_requests, signing  # noqa: E402
from protocol.schemas import AgentCredential, AgentIdentity  # noqa: E402
from server.serve import KEEP_ALIVE_SECONDS  # noqa: E402
from tests.support.live import ADMIN, ADMIN_PASSWORD, LiveServer, free_port  # noqa: E402
from tests.support.net import HOST  # noqa: E402

TARGET_AGENTS = 5000
TARGET_RSS_BYTES = 1 << 30
TARGET_P99_S = 2.0
MIB = 1 << 20
REQUESTS_PATH = "/v1/agent/requests"
REPO = Path(__file__).resolve().parent.parent
PROGRESS_EVERY = 10.0  # seconds between progress lines while measuring


class NotMeasured(RuntimeError):
    """The server for the benchmark could not be set up."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def raise_nofile() -> tuple[int, int]:
    """Raise this process's open-file limit (inherited by the server child) from soft to hard; return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --- the simulated agents ---------------------------------------------------------------------


@dataclass
class SimAgent:
    index: int
    key: Ed25519PrivateKey
    signer: AgentSigner | None = None
    client: httpx.AsyncClient | None = None
    connected: bool = False  # has had a poll held open by the server (or answered)
    failures: int = 0  # polls failed in a row: 0 means its connection is up (a poll held, or between two)


@dataclass
class Figures:
    """What one run measured."""

    label: str
    agents: int
    enrolled: int = 0
    enroll_s: float = 0.0
    enroll_errors: int = 0
    connect_s: float = 0.0
    connected: int = 0
    duration_s: float = 0.0
    polls: int = 0  # polls completed in the measured window
    polls_total: int = 0
    poll_errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    held_min: int | None = None  # polls in flight, sampled in the measured window
    held_max: int = 0
    up_min: int | None = None  # agents whose last poll succeeded (connected), sampled in the measured window
    server_sockets_max: int | None = None
    rss_idle: int | None = None
    rss_peak: int | None = None
    rss_peak_hold: int | None = None
    requests_sent: int = 0
    requests_failed: int = 0
    delivered: int = 0
    latencies_s: list[float] = field(default_factory=list, repr=False)
    create_latencies_s: list[float] = field(default_factory=list, repr=False)
    # The server's own view: from the request's creation to its delivery, by the server's clock (its record).
    server_latencies_s: list[float] = field(default_factory=list, repr=False)
    loop_lag_max_s: float = 0.0  # how late this process's event loop ran a 0.1 s timer: the simulator's own load

    def error(self, kind: str, sample: str) -> None:
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        if len(self.error_samples) < 5:
            self.error_samples.append(sample[:300])

    @property
    def checkins_per_s(self) -> float:
        return self.polls / self.duration_s if self.duration_s else 0.0

    def to_json(self) -> dict:
        def pct(values: list[float]) -> dict:
            return {f"p{p}": percentile(values, p) for p in (50, 90, 99)} | {"max": max(values) if values else None}

        data = {k: v for k, v in self.__dict__.items()
                if k not in ("latencies_s", "create_latencies_s", "server_latencies_s")}
        return data | {"checkins_per_s": round(self.checkins_per_s, 1), "delivery_s": pct(self.latencies_s),
                       "create_s": pct(self.create_latencies_s), "server_delivery_s": pct(self.server_latencies_s)}


def identity_of(key: Ed25519PrivateKey, index: int, run: str) -> AgentIdentity:
    """A distinct PC: its own key, hostname and machine id (none resembles another, so none waits for approval)."""
    return AgentIdentity(public_key=signing.public_key_b64(key), hostname=f"load-{run}-{index:05d}",
                         os="Linux (simulated)", agent_version=AGENT_VERSION,
                         machine_id=signing.fingerprint(signing.public_key_b64(key)).replace(":", "")[:64])


async def enroll_all(url: str, token: str, agents: list[SimAgent], concurrency: int, figures: Figures,
                     deadline: float) -> None:
    """Enroll every agent through ``POST /v1/agents/enroll``, as ``agent.link.enroll`` builds and checks it."""
    run = secrets.token_hex(3)
    queue = list(agents)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as api:
        async def worker() -> None:
            while queue and time.monotonic() < deadline:
                agent = queue.pop()
                me = identity_of(agent.key, agent.index, run)
                proof = signing.sign(agent.key, signing.proof_payload("enroll", "token", token, me.model_dump()))
                body = {"token": token, "identity": me.model_dump(mode="json", exclude_none=True), "signature": proof}
                try:
                    response = await api.post("/v1/agents/enroll", json=body)
                    if response.status_code != 200:
                        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
                    answer = AgentCredential.model_validate(response.json())
                    accept_credential(agent.key, answer, pinned=None, expected_fingerprint=None)
                except Exception as exc:  # counted; the agent stays out of the fleet
                    figures.enroll_errors += 1
                    figures.error(f"enroll: {type(exc).__name__}", f"enroll: {exc!r}")
                    continue
                agent.signer = AgentSigner(agent_id=answer.agent_id, key=agent.key,
                                           server_public_key=answer.server_public_key)
                figures.enrolled += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))


class Fleet:
    """Every enrolled agent holding its long poll, and what they receive."""

    def __init__(self, url: str, agents: list[SimAgent], wait: int, figures: Figures, *, plain: bool = False):
        self.url = url
        self.agents = [a for a in agents if a.signer is not None or plain]
        self.wait = wait
        self.figures = figures
        self.plain = plain  # the floor: unsigned polls to a bare app
        self.in_flight = 0
        self.measuring = False
        self.received: dict[str, float] = {}  # request id -> when a poll brought it
        self.arrived: dict[str, asyncio.Event] = {}
        self.stop = asyncio.Event()
        self.rng = random.Random(1)

    def up(self) -> int:
        """Agents connected now: their last poll succeeded (a poll is held, or the next is a jitter away)."""
        return sum(1 for a in self.agents if a.connected and a.failures == 0)

    async def run_agent(self, agent: SimAgent, start_after: float) -> None:
        timeout = httpx.Timeout(self.wait + 30, connect=30)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        agent.client = httpx.AsyncClient(base_url=self.url, timeout=timeout, limits=limits, verify=False)
        try:
            if await self._stopped_within(start_after):
                return
            while not self.stop.is_set():
                ok = await self.poll(agent)
                pause = self.rng.uniform(0, POLL_JITTER) if ok else self.backoff(agent.failures)
                if await self._stopped_within(pause):
                    return
        finally:
            await agent.client.aclose()

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
            return True
        except TimeoutError:
            return False

    def backoff(self, failures: int) -> float:
        """The agent's back-off after ``failures`` failed polls in a row (as agent.service.channel.RequestChannel)."""
        ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, failures - 1))
        return self.rng.uniform(ceiling / 2, ceiling)

    async def poll(self, agent: SimAgent) -> bool:
        """One long poll, signed as the agent signs it; True when it succeeded."""
        assert agent.client is not None
        request = agent.client.build_request("GET", REQUESTS_PATH, params={"wait": self.wait})
        if not self.plain:
            assert agent.signer is not None
            request.headers.update(agent.signer.headers(request.method, _target(request),
                                                        agent_requests.body_digest(b"")))
        self.in_flight += 1
        agent.connected = True
        try:
            response = await agent.client.send(request)
            if not self.plain:
                agent.signer.check_answer(request, response, agent_requests.body_digest(response.content))
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            batch = response.json()
        except Exception as exc:  # counted, then the agent backs off as the real one does
            agent.failures += 1
            self.figures.error(f"poll: {type(exc).__name__}", f"poll: {exc!r}")
            if self.measuring:
                self.figures.poll_errors += 1
            return False
        finally:
            self.in_flight -= 1
        now = time.monotonic()
        agent.failures = 0
        self.figures.polls_total += 1
        if self.measuring:
            self.figures.polls += 1
        for item in batch if isinstance(batch, list) else []:
            request_id = str((item.get("payload") or {}).get("id", ""))
            self.received.setdefault(request_id, now)
            if request_id in self.arrived:
                self.arrived[request_id].set()
        return True


async def send_requests(url: str, admin_token: str, fleet: Fleet, count: int, duration: float, figures: Figures,
                        deadline: float) -> None:
    """Create ``count`` PC requests spread evenly over ``duration``; wait for each to be delivered."""
    rng = random.Random(2)
    pending: list[tuple[str, float, asyncio.Event]] = []
    created: list[tuple[str, str]] = []  # (agent id, request id)
    headers = {"Authorization": f"Bearer {admin_token}"}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as api:
        async def one(agent: SimAgent) -> None:
            sent = time.monotonic()
            try:
                response = await api.post(f"/v1/agents/{agent.signer.agent_id}/requests", json={"kind": "snapshot"})
                returned = time.monotonic()
                if response.status_code != 201:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
                request_id = response.json()["id"]
            except Exception as exc:
                figures.requests_failed += 1
                figures.error(f"create: {type(exc).__name__}", f"create: {exc!r}")
                return
            figures.create_latencies_s.append(returned - sent)
            created.append((agent.signer.agent_id, request_id))
            arrived = fleet.arrived.setdefault(request_id, asyncio.Event())
            if request_id in fleet.received:
                arrived.set()
            pending.append((request_id, returned, arrived))

        tasks = []
        for i in range(count):
            due = started + duration * i / max(1, count)
            if due > deadline:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            figures.requests_sent += 1
            tasks.append(asyncio.create_task(one(rng.choice(fleet.agents))))
        await asyncio.gather(*tasks)
    # Deliveries still on their way when the window ends: at most one more poll cycle, within the deadline.
    grace_end = min(deadline, max(time.monotonic(), started + duration) + fleet.wait + 5)
    for request_id, returned, arrived in pending:
        remaining = grace_end - time.monotonic()
        if not arrived.is_set() and remaining > 0:
            try:
                await asyncio.wait_for(arrived.wait(), timeout=remaining)
            except TimeoutError:
                pass
        if request_id in fleet.received:
            figures.delivered += 1
            # A poll can bring the request before its create call has returned (the bell rings at commit).
            figures.latencies_s.append(max(0.0, fleet.received[request_id] - returned))
    await server_view(url, headers, created, figures, deadline)


async def server_view(url: str, headers: dict[str, str], created: list[tuple[str, str]], figures: Figures,
                      deadline: float) -> None:
    """Each delivered request's creation-to-delivery time as the server recorded it (its ``updated_at`` when
    delivered): the server's part of the latency, without this process's own delays."""
    queue = list(created)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as api:
        async def worker() -> None:
            while queue and time.monotonic() < deadline:
                agent_id, request_id = queue.pop()
                try:
                    response = await api.get(f"/v1/agents/{agent_id}/requests/{request_id}")
                    row = response.json()
                except (httpx.HTTPError, ValueError):
                    continue
                if response.status_code == 200 and row.get("state") == "delivered":
                    made, moved = datetime.fromisoformat(row["created_at"]), datetime.fromisoformat(row["updated_at"])
                    figures.server_latencies_s.append(max(0.0, (moved - made).total_seconds()))

        await asyncio.gather(*(worker() for _ in range(8)))


# --- the server and its memory ------------------------------------------------------------------


class Sampler:
    """The server's resident memory and sockets, sampled on a thread of their own."""

    def __init__(self, pid: int | None, port: int, interval: float = 0.5):
        self.process = psutil.Process(pid) if pid else None
        self.port = port
        self.interval = interval
        self.peak = 0
        self.peak_window = 0
        self.sockets_max = 0
        self.window = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fleet-load-sampler")
        self._sockets_every = 20  # samples: counting sockets walks every one of them

    def start(self) -> None:
        if self.process is not None:
            self._thread.start()

    def rss(self) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.memory_info().rss
        except psutil.Error:
            return None

    def _run(self) -> None:
        count = 0
        while not self._stop.wait(self.interval):
            rss = self.rss()
            if rss is None:
                return
            self.peak = max(self.peak, rss)
            if self.window:
                self.peak_window = max(self.peak_window, rss)
                count += 1
                if count % self._sockets_every == 1:
                    try:
                        held = sum(1 for c in self.process.net_connections("tcp")
                                   if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port)
                        self.sockets_max = max(self.sockets_max, held)
                    except psutil.Error:
                        pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """The bench server's settings: no access log, enrollment limits out of the way, the poll's look as asked."""
    env = {k: v for k, v in os.environ.items() if k.startswith("HELPLINE_")}
    # The server runs this checkout's code, whatever the installed package points at.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env |= {"HELPLINE_LOG_LEVEL": "warning", "HELPLINE_RATE_LIMITS__ENROLL_PER_IP": str(max(20, args.agents * 2))}
    if args.request_poll_seconds is not None:
        env["HELPLINE_SNAPSHOTS__REQUEST_POLL_SECONDS"] = str(args.request_poll_seconds)
    return env


def login(url: str, username: str, password: str) -> str:
    response = httpx.post(f"{url}/v1/auth/login", json={"username": username, "password": password}, timeout=60)
    if response.status_code != 200:
        raise NotMeasured(f"login as {username} answered {response.status_code}: {response.text[:200]}")
    return response.json()["token"]


def enrollment_token(url: str, admin_token: str, uses: int) -> str:
    response = httpx.post(f"{url}/v1/enrollment-tokens", headers={"Authorization": f"Bearer {admin_token}"},
                          json={"group": "load", "max_uses": max(1, uses), "expires_in_hours": 2,
                                "note": "bench/fleet_load.py"}, timeout=60)
    if response.status_code != 201:
        raise NotMeasured(f"creating an enrollment token answered {response.status_code}: {response.text[:200]}")
    return response.json()["token"]


# --- one run ------------------------------------------------------------------------------------


async def hold_fleet(url: str, agents: list[SimAgent], args: argparse.Namespace, figures: Figures,
                     sampler: Sampler, deadline: float, admin_token: str | None, *, plain: bool = False) -> None:
    """Connect every agent, measure ``args.duration`` seconds (with requests unless ``plain``), stop them all."""
    fleet = Fleet(url, agents, args.wait, figures, plain=plain)
    ramp = args.ramp if args.ramp is not None else min(30.0, len(fleet.agents) / 250)
    started = time.monotonic()
    tasks = [asyncio.create_task(fleet.run_agent(a, ramp * i / max(1, len(fleet.agents))))
             for i, a in enumerate(fleet.agents)]

    async def watch_lag() -> None:
        while not fleet.stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.1)
            if fleet.measuring:
                figures.loop_lag_max_s = max(figures.loop_lag_max_s, time.monotonic() - before - 0.1)

    tasks.append(asyncio.create_task(watch_lag()))
    try:
        # Connected: every agent has sent its first poll and the server holds them (or answered them).
        while time.monotonic() < deadline and sum(a.connected for a in fleet.agents) < len(fleet.agents):
            await asyncio.sleep(0.2)
        await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))  # the last ones reach the server
        figures.connect_s = time.monotonic() - started
        figures.connected = sum(a.connected for a in fleet.agents)
        log(f"{figures.label}: {figures.connected} agents connected in {figures.connect_s:.1f} s, "
            f"{fleet.in_flight} polls held; measuring {args.duration:.0f} s")
        window_end = min(deadline, time.monotonic() + args.duration)
        fleet.measuring, sampler.window = True, True
        window_start = time.monotonic()
        sender = None
        if not plain and args.requests and admin_token:
            sender = asyncio.create_task(send_requests(url, admin_token, fleet, args.requests,
                                                       max(0.0, window_end - window_start), figures, deadline))
        figures.held_min = fleet.in_flight
        figures.up_min = fleet.up()
        next_progress = window_start + PROGRESS_EVERY
        while time.monotonic() < window_end:
            await asyncio.sleep(min(0.5, max(0.0, window_end - time.monotonic())))
            figures.held_min = min(figures.held_min, fleet.in_flight)
            figures.held_max = max(figures.held_max, fleet.in_flight)
            figures.up_min = min(figures.up_min, fleet.up())
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY
                log(f"{figures.label}: {time.monotonic() - window_start:.0f} s: {figures.polls} polls, "
                    f"{fleet.in_flight} held, {fleet.up()} connected, {figures.poll_errors} errors, "
                    f"requests {figures.requests_sent} sent / {len(figures.create_latencies_s)} created / "
                    f"{len(fleet.received)} received, server RSS {_mib(sampler.rss())}, "
                    f"this process's loop late by up to {figures.loop_lag_max_s:.1f} s")
        figures.duration_s = time.monotonic() - window_start
        fleet.measuring, sampler.window = False, False
        if sender is not None:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await sender
            except TimeoutError:
                log(f"{figures.label}: the global deadline ended the wait for deliveries")
    finally:
        # Polls in flight are abandoned, as the agent abandons one when it stops; the server ends them.
        fleet.stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=15)


async def bounded(work, deadline: float, label: str) -> None:
    """Run ``work`` until it ends or the global deadline passes."""
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            await work
    except TimeoutError:
        log(f"{label}: the global deadline ended the run")


def measure(url: str, server_pid: int | None, port: int, admin_token: str | None, args: argparse.Namespace,
            label: str, *, plain: bool = False) -> Figures:
    figures = Figures(label, args.agents)
    deadline = time.monotonic() + args.deadline
    sampler = Sampler(server_pid, port)
    figures.rss_idle = sampler.rss()
    sampler.start()
    agents = [SimAgent(i, Ed25519PrivateKey.generate()) for i in range(args.agents)]
    try:
        if not plain:
            token = enrollment_token(url, admin_token, args.agents)
            t0 = time.monotonic()
            asyncio.run(enroll_all(url, token, agents, args.enroll_concurrency, figures, deadline))
            figures.enroll_s = time.monotonic() - t0
            log(f"{label}: enrolled {figures.enrolled} agents in {figures.enroll_s:.1f} s "
                f"({figures.enrolled / figures.enroll_s if figures.enroll_s else 0:.0f}/s), {figures.enroll_errors} errors")
        asyncio.run(bounded(hold_fleet(url, agents, args, figures, sampler, deadline, admin_token, plain=plain),
                            deadline, figures.label))
    finally:
        sampler.stop()
    figures.rss_peak = sampler.peak or None
    figures.rss_peak_hold = sampler.peak_window or None
    figures.server_sockets_max = sampler.sockets_max if server_pid else None
    return figures


FLOOR_APP = textwrap.dedent("""
    import asyncio, sys, uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        wait = 0
        for part in scope.get("query_string", b"").decode().split("&"):
            if part.startswith("wait="):
                wait = int(part[5:] or 0)
        await asyncio.sleep(wait)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"[]"})

    uvicorn.run(app, host=sys.argv[1], port=int(sys.argv[2]), log_level="warning", access_log=False,
                server_header=False, timeout_graceful_shutdown=5, timeout_keep_alive=int(sys.argv[3]))
""")


def measure_floor(args: argparse.Namespace, work: Path) -> Figures:
    """The floor: a bare uvicorn app (the same interpreter, uvicorn and keep-alive as the server) holding as
    many plain long polls."""
    port = free_port()
    log_file = (work / "floor.log").open("ab")
    process = subprocess.Popen([sys.executable, "-c", FLOOR_APP, HOST, str(port), str(KEEP_ALIVE_SECONDS)], stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://{HOST}:{port}"
        for _ in range(150):
            try:
                httpx.get(f"{url}/?wait=0", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise NotMeasured("the floor's bare uvicorn app did not start")
        return measure(url, process.pid, port, None, args, "floor (bare uvicorn)", plain=True)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


# --- the report -----------------------------------------------------------------------------------


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f} MiB"


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def table(runs: list[Figures]) -> str:
    rows = ["| run | agents connected (lowest) | enroll /s | check-ins /s | polls held min–max | server RSS idle / peak "
            "| requests delivered | delivery p50 / p90 / p99 / max | errors |",
            "|---|---|---|---|---|---|---|---|---|"]
    for f in runs:
        enroll = f"{f.enrolled / f.enroll_s:.0f}" if f.enroll_s else "—"
        lat = " / ".join(_s(percentile(f.latencies_s, p)) for p in (50, 90, 99)) + \
            f" / {_s(max(f.latencies_s) if f.latencies_s else None)}"
        delivered = f"{f.delivered} of {f.requests_sent}" if f.requests_sent else "—"
        errors = f.poll_errors + f.enroll_errors + f.requests_failed
        rows.append(f"| {f.label} | {f.up_min} of {f.agents} | {enroll} | {f.checkins_per_s:.0f} | "
                    f"{f.held_min}–{f.held_max} | {_mib(f.rss_idle)} / {_mib(f.rss_peak)} | {delivered} | "
                    f"{lat if f.latencies_s else '—'} | {errors} |")
    return "\n".join(rows)


def verdicts(f: Figures, floor: Figures | None = None) -> list[str]:
    up = f.up_min or 0
    sockets = "" if f.server_sockets_max is None else f", server sockets held up to {f.server_sockets_max}"
    lines = [f"{f.label}: agents connected at once = {up} (lowest sample; polls held {f.held_min}–{f.held_max}"
             f"{sockets}; target {TARGET_AGENTS}): {'PASS' if up >= TARGET_AGENTS else 'FAIL'}"]
    if f.rss_peak is not None:
        lines.append(f"{f.label}: server RSS peak = {_mib(f.rss_peak)} (target < 1024 MiB): "
                     f"{'PASS' if f.rss_peak < TARGET_RSS_BYTES else 'FAIL'}")
    else:
        lines.append(f"{f.label}: server RSS: NOT MEASURED (give --server-pid with --url)")
    p99 = percentile(f.latencies_s, 99)
    lost = f.requests_sent - f.delivered
    lines.append(f"{f.label}: request delivery p99 = {_s(p99)} (target < 2 s), {lost} of {f.requests_sent} "
                 f"not delivered: {'PASS' if p99 is not None and p99 < TARGET_P99_S and lost == 0 else 'FAIL'}")
    server = percentile(f.server_latencies_s, 99)
    if f.server_latencies_s:
        lines.append(f"{f.label}: the server's own record, creation to delivery: p50 "
                     f"{_s(percentile(f.server_latencies_s, 50))}, p99 {_s(server)}, max {_s(max(f.server_latencies_s))} "
                     f"({len(f.server_latencies_s)} requests; the simulator's event loop ran up to "
                     f"{f.loop_lag_max_s:.1f} s late, which the end-to-end figure includes)")
    lines.append(f"{f.label}: errors = {f.poll_errors} polls, {f.enroll_errors} enrollments, "
                 f"{f.requests_failed} requests" + (f" ({', '.join(f'{k}: {v}' for k, v in f.error_kinds.items())})"
                                                    if f.error_kinds else ""))
    if floor is not None and floor.rss_peak and f.rss_peak:
        lines.append(f"{f.label}: server RSS peak / floor's = {f.rss_peak / floor.rss_peak:.2f} "
                     f"({_mib(f.rss_peak)} / {_mib(floor.rss_peak)}; check-ins/s {f.checkins_per_s:.0f} / "
                     f"{floor.checkins_per_s:.0f})")
    return lines


def machine_facts() -> dict:
    return {"hostname": platform.node(), "kernel": platform.release(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="N simulated agents held connected to one Helpline server.")
    parser.add_argument("--agents", type=int, default=TARGET_AGENTS, help=f"agents to enroll and hold (default {TARGET_AGENTS})")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured once all are connected (default 60)")
    parser.add_argument("--requests", type=int, default=200, help="PC requests created, spread over the duration (default 200)")
    parser.add_argument("--wait", type=int, default=25, help="seconds each long poll asks the server to hold (the agent's 25)")
    parser.add_argument("--ramp", type=float, help="seconds over which agents make their first poll (default agents/250, at most 30)")
    parser.add_argument("--enroll-concurrency", type=int, default=16, help="enrollments at once (default 16)")
    parser.add_argument("--request-poll-seconds", type=float,
                        help="the server's [snapshots] request_poll_seconds (its periodic look; server default if unset)")
    parser.add_argument("--deadline", type=float, help="seconds after which everything stops (default: generous, from the others)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the started server's database (postgresql: a throwaway cluster on loopback)")
    parser.add_argument("--database-url", help="the started server's database URL (instead of --database)")
    parser.add_argument("--url", help="measure a running server instead (its admin: --admin, password in FLEET_LOAD_PASSWORD)")
    parser.add_argument("--admin", default=ADMIN, help="the admin who creates the token and the requests (with --url)")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's PID, for its memory")
    parser.add_argument("--baseline", action="store_true", help="also measure the floor: a bare uvicorn app holding as many plain polls")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--work-dir", type=Path, help="where to make the scratch directory (default: the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory and the server log")
    args = parser.parse_args(argv)
    if args.agents < 1 or args.duration <= 0 or args.requests < 0 or not 0 <= args.wait <= 60 or args.enroll_concurrency < 1:
        parser.error("--agents and --enroll-concurrency 1 or more, --duration above 0, --requests 0 or more, --wait 0–60")
    if args.deadline is None:
        args.deadline = 120 + args.agents / 20 + args.duration + 2 * args.wait + 30
    return args


def _stop_on_sigterm(signum, frame) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # the finally blocks stop the server by its PID


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    nofile = raise_nofile()
    if nofile[0] < 2 * args.agents + 100:
        log(f"warning: the open-file limit is {nofile[0]}; {args.agents} agents need about {2 * args.agents} "
            "(both ends of every connection in this process and the server)")
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="helpline-fleet-", dir=args.work_dir))
    facts = machine_facts()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    runs: list[Figures] = []
    problem = None
    server = cluster = None
    try:
        import uvloop  # the client's loop: its own CPU is not the server's figure

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    try:
        if args.url:
            url, pid, port = args.url.rstrip("/"), args.server_pid, httpx.URL(args.url).port or 0
            password = os.environ.get("FLEET_LOAD_PASSWORD")
            if not password:
                raise NotMeasured("--url needs the admin's password in FLEET_LOAD_PASSWORD")
            admin_token = login(url, args.admin, password)
        else:
            database_url = args.database_url
            if database_url is None and args.database == "postgresql":
                from tests.support.pgcluster import PgCluster, PgClusterError, find_bindir

                if find_bindir() is None:
                    raise NotMeasured("PostgreSQL server binaries are not installed")
                cluster = PgCluster()
                try:
                    cluster.start()
                    database_url = cluster.create_database("helpline_fleet")
                except PgClusterError as exc:
                    raise NotMeasured(f"PostgreSQL did not start: {str(exc)[:300]}") from exc
            server = LiveServer(data_dir=work / "server", database_url=database_url, env=server_env(args))
            server.data_dir.mkdir(parents=True)
            log("starting a server on loopback")
            try:
                server.init()
                server.start()
            except RuntimeError as exc:
                raise NotMeasured(f"the server did not start: {str(exc)[:300]}") from exc
            url, pid, port = server.url, server.process.pid, server.port
            admin_token = login(url, ADMIN, ADMIN_PASSWORD)
        notes = ([] if args.url or (args.database == "sqlite" and not args.database_url) else
                 ["postgresql" if args.database == "postgresql" and not args.database_url else "database URL"])
        notes += [f"request_poll_seconds {args.request_poll_seconds:g}"] if args.request_poll_seconds is not None else []
        label = "helpline" + (f" ({', '.join(notes)})" if notes else "")
        runs.append(measure(url, pid, port, admin_token, args, label))
    except NotMeasured as exc:
        problem = str(exc)
        log(f"NOT MEASURED: {exc}")
    finally:
        if server is not None:
            server.stop()
        if cluster is not None:
            cluster.stop()
    floor = None
    if args.baseline and problem is None:
        try:
            floor = measure_floor(args, work)
            runs.append(floor)
        except NotMeasured as exc:
            log(f"floor: NOT MEASURED: {exc}")

    report = [
        f"fleet load on {facts['hostname']} ({facts['cpus']} CPUs, kernel {facts['kernel']}, Python {facts['python']}, "
        f"load average at start {' '.join(map(str, facts['loadavg']))}, at end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, open files {nofile[0]})",
        f"{args.agents} agents, each holding GET {REQUESTS_PATH}?wait={args.wait} (signed), {args.requests} requests "
        f"over {args.duration:.0f} s; the simulated agents run in this process, on the same machine",
        "No peer agent exists to run side by side: the figures are absolute, against the target "
        f"({TARGET_AGENTS} agents held by one process in under 1 GiB, delivery p99 under 2 s).",
        "",
        table(runs),
        "",
        *[v for f in runs if f is not floor for v in verdicts(f, floor)],
        *([f"NOT MEASURED: {problem}"] if problem else []),
        *[f"  {s}" for f in runs for s in f.error_samples],
    ]
    print("\n".join(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "started_at": started_at, "machine": facts, "open_files": nofile,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "runs": [f.to_json() for f in runs], "not_measured": problem,
        }, indent=2) + "\n")
        print(f"figures written to {args.json}")
    if args.keep or problem:
        print(f"logs and scratch files kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
