#!/usr/bin/env python3
"""Helpline's remote session against a plain OpenSSH server, in one run on loopback.

Three paths, each driven by the real OpenSSH client (`ssh`, `sftp`) with the same
cipher (aes128-gcm) and one multiplexed connection (ControlMaster) per path, so
every figure is a channel, never a handshake:

- **openssh**: `/usr/sbin/sshd` on a free loopback port, with its own host key and
  config, running as the current user (stopped by its PID);
- **paramiko direct**: Helpline's session host (`agent.session.host.SessionHost`,
  paramiko) served on a loopback TCP port, no relay;
- **helpline**: the whole session path: `helpline server run` on loopback, a PC
  that offers a session and consents in-process, and the engineer's `ssh` with
  `helpline relay SESSION` as its ProxyCommand (WebSocket to the server's relay,
  spliced to the PC's WebSocket, bridged to the same session host).

For each path: keystroke round trip (one byte to `cat` in a raw terminal and
back; median and p99), raw channel throughput (`head -c N > /dev/null` fed N
bytes) and `sftp put` throughput. It prints the figures, the ratios against
OpenSSH and against paramiko direct, the verdicts (added median latency under
5 ms; throughput at least 50 % of OpenSSH's) and the CPU each process spent
during the throughput runs (where the time goes).

Exits 0 when it measured (look for FAIL), 1 when a path could not be set up
(printed as NOT MEASURED). Run: ``.venv/bin/python bench/session_vs_sshd.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import ratio, verdict_line  # noqa: E402
from bench.server_load import NotMeasured, percentile  # noqa: E402

CIPHER = "aes128-gcm@openssh.com"
SSHD = "/usr/sbin/sshd"
LATENCY_TARGET_MS = 5.0
THROUGHPUT_TARGET = 0.5
MiB = 1024 * 1024
STEP_TIMEOUT = 120.0  # seconds any one ssh or sftp run may take before it is killed


@dataclass
class PathFigures:
    """What one path measured; None where it could not."""

    name: str
    cipher: str = CIPHER
    latency_ms: list[float] = field(default_factory=list)
    raw_seconds: list[float] = field(default_factory=list)
    forward_seconds: list[float] = field(default_factory=list)
    sftp_seconds: list[float] = field(default_factory=list)
    raw_bytes: int = 0
    sftp_bytes: int = 0
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    problem: str | None = None

    @property
    def latency_p50(self) -> float | None:
        return percentile(self.latency_ms, 50)

    @property
    def latency_p99(self) -> float | None:
        return percentile(self.latency_ms, 99)

    @property
    def raw_mib_s(self) -> float | None:
        return self.raw_bytes / MiB / statistics.median(self.raw_seconds) if self.raw_seconds else None

    @property
    def forward_mib_s(self) -> float | None:
        return self.raw_bytes / MiB / statistics.median(self.forward_seconds) if self.forward_seconds else None

    @property
    def sftp_mib_s(self) -> float | None:
        return self.sftp_bytes / MiB / statistics.median(self.sftp_seconds) if self.sftp_seconds else None

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(latency_p50_ms=self.latency_p50, latency_p99_ms=self.latency_p99,
                    raw_mib_s=self.raw_mib_s, forward_mib_s=self.forward_mib_s, sftp_mib_s=self.sftp_mib_s)
        return data


@dataclass
class Target:
    """One way to reach a shell: the ssh options and destination that reach it, and who to charge CPU to."""

    name: str
    options: list[str]
    destination: str
    processes: dict[str, Callable[[], list[int]]] = field(default_factory=dict)
    env: dict[str, str] | None = None  # the environment ssh runs in (None: this process's)


# --- the engineer's key and the plain ssh options ------------------------------------------------


def engineer_key(work: Path) -> Path:
    """An Ed25519 key made with ssh-keygen, as an engineer has; the private key's path."""
    key = work / "engineer" / "id_ed25519"
    key.parent.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench@helpline", "-f", str(key)],
                   check=True, timeout=30)
    return key


def ssh_options(key: Path, known_hosts: Path, *extra: str) -> list[str]:
    """Options every path shares: no user config, this key only, the host key pinned, one cipher."""
    return ["-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no", "-o", f"Ciphers={CIPHER}",
            "-o", "ConnectTimeout=20", *extra]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, alive: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise NotMeasured("the server exited before it listened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                if conn.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise NotMeasured(f"nothing answered SSH on port {port} within {timeout:.0f} s")


# --- the three paths ---------------------------------------------------------------------------------


@contextmanager
def openssh_target(work: Path, key: Path) -> Iterator[Target]:
    """A plain sshd on a free loopback port, run as the current user with its own host key and config."""
    if not Path(SSHD).exists():
        raise NotMeasured(f"{SSHD} is not installed (apt-get install openssh-server)")
    folder = work / "sshd"
    folder.mkdir(mode=0o700)
    host_key = folder / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True, timeout=30)
    (folder / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    port = free_port()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", f"PidFile {folder / 'sshd.pid'}",
        "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "Subsystem sftp internal-sftp", "LogLevel ERROR", "",
    ]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder, as its unit makes it
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(folder / 'host_ed25519.pub').read_text()}")
    log = (folder / "sshd.log").open("wb")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, lambda: process.poll() is None)
        yield Target("openssh", ssh_options(key, known, "-o", f"Port={port}"), f"{_user()}@127.0.0.1",
                     {"sshd": lambda: _tree(process.pid)})
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def _grant_for(host_key, key: Path, scopes: set[str], agent_id: str = "bench-pc"):
    import uuid
    from datetime import datetime, timedelta, timezone

    from agent.session.host import key_fingerprint
    from protocol.grants import SessionGrant, openssh_fingerprint

    line = Path(f"{key}.pub").read_text().strip()
    now = datetime.now(timezone.utc)
    return SessionGrant(
        grant_id=str(uuid.uuid4()), nonce=uuid.uuid4().hex * 2, agent_id=agent_id,
        host_key_fingerprint=key_fingerprint(host_key), ticket="T-1001", engineer_username="bench",
        engineer_name="Bench", organisation="Helpline bench", engineer_key=line,
        engineer_key_fingerprint=openssh_fingerprint(line), scopes=frozenset(scopes),
        not_before=now - timedelta(seconds=5), expires_at=now + timedelta(hours=1), max_duration_seconds=3600,
    )


@contextmanager
def direct_target(work: Path, key: Path) -> Iterator[Target]:
    """Helpline's session host (paramiko) on a loopback TCP port, in this process, with no relay."""
    from agent.session.host import SessionHost, new_host_key

    host_key = new_host_key()
    grant = _grant_for(host_key, key, {"view", "control", "files", "forward"})
    host = SessionHost(grant, host_key=host_key, grace=0.3)
    host.give_consent(grant.grant_id)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            host.serve(conn)

    thread = threading.Thread(target=accept, name="bench-direct-accept", daemon=True)
    thread.start()
    known = work / "direct_known_hosts"
    known.write_text(host.known_hosts_line("127.0.0.1", port) + "\n")
    try:
        yield Target("paramiko direct", ssh_options(key, known, "-o", f"Port={port}"), f"{_user()}@127.0.0.1",
                     {"session host (this process)": lambda: [os.getpid()]})
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        host.end("the bench is over")
        host.wait(10)


@contextmanager
def helpline_target(work: Path, key: Path) -> Iterator[Target]:
    """The whole session: a server on loopback, a PC offering a session, `helpline relay` as ProxyCommand."""
    from bench.session_path import helpline_session

    with helpline_session(work, key) as session:
        # The printed block holds the relay, the pinned key and the identity; the rest is what every path shares.
        options = ["-F", str(session.config), "-o", "BatchMode=yes", "-o", f"Ciphers={CIPHER}", "-o", "ConnectTimeout=20"]
        yield Target("helpline", options, session.destination, session.processes, session.env)


def _user() -> str:
    import getpass

    return getpass.getuser()


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


# --- measuring through one multiplexed connection -----------------------------------------------------


class Mux:
    """One master connection (ControlMaster) to a target; every measurement opens a channel on it."""

    def __init__(self, target: Target, work: Path):
        self.target = target
        self.control = Path(tempfile.mkdtemp(prefix="hl-mux-", dir="/tmp")) / "c"
        self.master: subprocess.Popen | None = None
        self.log = (work / f"master-{target.name.replace(' ', '-')}.log").open("wb")

    def argv(self, *extra: str) -> list[str]:
        return ["ssh", *self.target.options, "-o", f"ControlPath={self.control}", *extra]

    def start(self, timeout: float = 60.0) -> None:
        self.master = subprocess.Popen(self.argv("-M", "-N", self.target.destination), env=self.target.env,
                                       stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master.poll() is not None:
                raise NotMeasured(f"{self.target.name}: ssh exited {self.master.returncode}: {self._log_tail()}")
            check = subprocess.run(self.argv("-O", "check", self.target.destination), capture_output=True, timeout=10,
                                   env=self.target.env)
            if check.returncode == 0:
                return
            time.sleep(0.1)
        raise NotMeasured(f"{self.target.name}: the ssh connection was not up within {timeout:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-400:].strip() or "(no output)"

    def stop(self) -> None:
        if self.master is not None and self.master.poll() is None:
            subprocess.run(self.argv("-O", "exit", self.target.destination), capture_output=True, timeout=10,
                           env=self.target.env)
            try:
                self.master.wait(10)
            except subprocess.TimeoutExpired:
                self.master.kill()
                self.master.wait(5)
        self.log.close()
        shutil.rmtree(self.control.parent, ignore_errors=True)

    def pids(self) -> dict[str, list[int]]:
        found = {name: pids() for name, pids in self.target.processes.items()}
        if self.master is not None:
            found["ssh client"] = [self.master.pid]
            relay = _tree(self.master.pid)[1:]  # the ProxyCommand, where there is one
            if relay:
                found["ProxyCommand (helpline relay)"] = relay
        return found


def _read_exactly(fd: int, count: int, deadline: float) -> bytes:
    data = b""
    while len(data) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise NotMeasured(f"no echo within the time allowed (got {data!r})")
        chunk = os.read(fd, count - len(data))
        if not chunk:
            raise NotMeasured(f"the shell closed (got {data!r})")
        data += chunk
    return data


def keystroke_latency(mux: Mux, count: int) -> list[float]:
    """Round trips of one byte, in ms: typed into ssh, echoed by `cat` in a raw terminal on the far side."""
    ssh = subprocess.Popen(mux.argv("-tt", mux.target.destination, "stty raw -echo; echo READY; exec cat"),
                           env=mux.target.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    try:
        out, into = ssh.stdout.fileno(), ssh.stdin.fileno()
        seen = b""
        deadline = time.monotonic() + 30
        while b"READY" not in seen:
            seen += _read_exactly(out, 1, deadline)
        time.sleep(0.2)  # the line end after READY, and anything else, arrives now: drop it
        while select.select([out], [], [], 0.1)[0]:
            if not os.read(out, 65536):
                raise NotMeasured("the shell closed before the measurement")
        latencies = []
        for i in range(count):
            byte = bytes([97 + i % 26])
            started = time.perf_counter()
            os.write(into, byte)
            echoed = _read_exactly(out, 1, time.monotonic() + 10)
            latencies.append((time.perf_counter() - started) * 1000)
            if echoed != byte:
                raise NotMeasured(f"sent {byte!r}, got {echoed!r} back")
            time.sleep(0.005)  # a fast typist, not a flood
        return latencies
    finally:
        ssh.kill()
        ssh.wait(10)


SINK = """
import socket, sys
size = int(sys.argv[1])
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    left = size
    while left > 0:
        data = conn.recv(min(left, 1 << 20))
        if not data:
            break
        left -= len(data)
    conn.close()
"""


@contextmanager
def sink(size: int) -> Iterator[int]:
    """A loopback service in its own process that reads ``size`` bytes per connection and hangs up; its port."""
    process = subprocess.Popen([sys.executable, "-c", SINK, str(size)], stdout=subprocess.PIPE, text=True)
    try:
        ready = select.select([process.stdout], [], [], 30)[0]
        if not ready:
            raise NotMeasured("the forward sink did not start")
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait(10)


def timed(argv: list[str], *, stdin_path: Path | None = None, what: str, env: dict[str, str] | None = None) -> float:
    """Run ``argv`` to its end; its wall time in seconds (NotMeasured if it fails or hangs)."""
    with ExitStack() as stack:
        stdin = stack.enter_context(stdin_path.open("rb")) if stdin_path else subprocess.DEVNULL
        started = time.perf_counter()
        done = subprocess.run(argv, stdin=stdin, capture_output=True, timeout=STEP_TIMEOUT, env=env)
        elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise NotMeasured(f"{what} exited {done.returncode}: {done.stderr.decode(errors='replace')[-300:].strip()}")
    return elapsed


def cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU seconds used so far by each group of processes (children that exited are not counted)."""
    import psutil

    spent: dict[str, float] = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        spent[name] = total
    return spent


def measure_path(target: Target, work: Path, args: argparse.Namespace, payload: Path) -> PathFigures:
    figures = PathFigures(target.name)
    mux = Mux(target, work)
    remote = work / f"remote-{target.name.replace(' ', '-')}"
    remote.mkdir()
    try:
        mux.start()
        figures.latency_ms = keystroke_latency(mux, args.keystrokes)
        size = payload.stat().st_size
        figures.raw_bytes = figures.sftp_bytes = size
        before = cpu_of(mux.pids())
        for _ in range(args.runs):
            figures.raw_seconds.append(timed(mux.argv(target.destination, f"head -c {size} > /dev/null"),
                                             stdin_path=payload, what=f"{target.name}: raw channel", env=target.env))
        with sink(size) as sink_port:  # a channel with no terminal behind it: the transport and relay alone
            for _ in range(args.runs):
                figures.forward_seconds.append(timed(mux.argv("-W", f"127.0.0.1:{sink_port}", target.destination),
                                                     stdin_path=payload, what=f"{target.name}: forward channel",
                                                     env=target.env))
        batch = work / f"batch-{target.name.replace(' ', '-')}"
        batch.write_text(f"put {payload} {remote / 'payload.bin'}\n")
        for _ in range(args.runs):
            figures.sftp_seconds.append(timed(["sftp", *target.options, "-o", f"ControlPath={mux.control}",
                                               "-b", str(batch), target.destination],
                                              what=f"{target.name}: sftp put", env=target.env))
            if (remote / "payload.bin").stat().st_size != size:
                raise NotMeasured(f"{target.name}: sftp put left a file of the wrong size")
            (remote / "payload.bin").unlink()
        after = cpu_of(mux.pids())
        figures.cpu_seconds = {name: round(after[name] - before.get(name, 0.0), 2) for name in after}
    except NotMeasured as exc:
        figures.problem = str(exc)
    finally:
        mux.stop()
        shutil.rmtree(remote, ignore_errors=True)
    return figures


# --- the report ---------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def report(paths: list[PathFigures], args: argparse.Namespace) -> list[str]:
    """The table, the ratios, the verdicts and where the time went, as printed lines."""
    by = {p.name: p for p in paths}
    lines = [f"{'path':18} {'keystroke p50 ms':>17} {'p99 ms':>8} {'raw MiB/s':>10} {'forward MiB/s':>14} "
             f"{'sftp put MiB/s':>15}"]
    for p in paths:
        lines.append(f"{p.name:18} {_ms(p.latency_p50):>17} {_ms(p.latency_p99):>8} {_rate(p.raw_mib_s):>10} "
                     f"{_rate(p.forward_mib_s):>14} {_rate(p.sftp_mib_s):>15}" + (f"   NOT MEASURED: {p.problem}" if p.problem else ""))
    openssh, direct, helpline = by.get("openssh"), by.get("paramiko direct"), by.get("helpline")
    for base in (openssh, direct):
        if base is None:
            continue
        for p in paths:
            if p is base or (base is direct and p is openssh):
                continue
            lines.append(f"ratio {p.name}/{base.name}: raw {_ratio(p.raw_mib_s, base.raw_mib_s)}, "
                         f"forward {_ratio(p.forward_mib_s, base.forward_mib_s)}, "
                         f"sftp {_ratio(p.sftp_mib_s, base.sftp_mib_s)}, keystroke p50 "
                         f"{_ratio(p.latency_p50, base.latency_p50)}")
    if openssh is not None and helpline is not None:
        added = (helpline.latency_p50 - openssh.latency_p50
                 if helpline.latency_p50 is not None and openssh.latency_p50 is not None else None)
        lines.append(verdict_line("added median keystroke latency helpline-openssh", added, LATENCY_TARGET_MS,
                                  op="<", unit=" ms"))
        for label, mine, theirs in (("raw", helpline.raw_mib_s, openssh.raw_mib_s),
                                    ("forward", helpline.forward_mib_s, openssh.forward_mib_s),
                                    ("sftp put", helpline.sftp_mib_s, openssh.sftp_mib_s)):
            lines.append(at_least_line(f"{label} throughput helpline/openssh", ratio(mine, theirs), THROUGHPUT_TARGET))
    lines.append("CPU seconds during the throughput runs (where the time goes):")
    for p in paths:
        if p.cpu_seconds:
            lines.append(f"  {p.name}: " + ", ".join(f"{name} {spent:.2f} s" for name, spent in p.cpu_seconds.items()))
    return lines


def at_least_line(label: str, value: float | None, target: float) -> str:
    """Return e.g. ``raw throughput helpline/openssh = 0.62 (target ≥ 0.50): PASS`` (NOT MEASURED when unknown)."""
    if value is None:
        return f"{label} = n/a (target ≥ {target:.2f}): NOT MEASURED"
    shown = f"{value:.2f}"
    if (float(shown) >= target) != (value >= target):  # rounding would contradict the verdict
        shown = f"{value:.4f}"
    return f"{label} = {shown} (target ≥ {target:.2f}): {'PASS' if value >= target else 'FAIL'}"


def _ratio(mine: float | None, theirs: float | None) -> str:
    value = ratio(mine, theirs)
    return "n/a" if value is None else f"{value:.2f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Helpline's session against OpenSSH's sshd and paramiko direct, on loopback.")
    parser.add_argument("--size-mib", type=int, default=128, help="bytes copied per throughput run, in MiB (default 128)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each throughput measurement (default 3)")
    parser.add_argument("--keystrokes", type=int, default=200, help="keystroke round trips per path (default 200)")
    parser.add_argument("--paths", default="openssh,paramiko direct,helpline",
                        help="which paths to measure, comma-separated (default: all three)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure to this JSON file")
    parser.add_argument("--work-dir", type=Path, help="where to make the scratch directory (default: the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    args = parser.parse_args(argv)
    if args.size_mib <= 0 or args.runs <= 0 or args.keystrokes <= 0:
        parser.error("--size-mib, --runs and --keystrokes must be above 0")
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = set(args.paths) - set(TARGETS)
    if unknown:
        parser.error(f"unknown path(s): {', '.join(sorted(unknown))}")
    return args


TARGETS: dict[str, Callable[[Path, Path], object]] = {
    "openssh": openssh_target,
    "paramiko direct": direct_target,
    "helpline": helpline_target,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("ssh", "sftp", "ssh-keygen"):
        if shutil.which(tool) is None:
            print(f"NOT MEASURED: {tool} is not installed (apt-get install openssh-client)", file=sys.stderr)
            return 1
    work = Path(tempfile.mkdtemp(prefix="helpline-session-bench-", dir=args.work_dir))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    paths: list[PathFigures] = []
    try:
        key = engineer_key(work)
        payload = work / "payload.bin"
        with payload.open("wb") as fh:
            block = os.urandom(MiB)
            for _ in range(args.size_mib):
                fh.write(block)
        for name in args.paths:
            try:
                with TARGETS[name](work, key) as target:
                    paths.append(measure_path(target, work, args, payload))
            except NotMeasured as exc:
                paths.append(PathFigures(name, problem=str(exc)))
            except Exception as exc:  # a path that cannot be set up is reported, the others still run
                paths.append(PathFigures(name, problem=f"{exc.__class__.__name__}: {exc}"))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"remote session on {platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average at start {load}); {args.size_mib} MiB per throughput run, {args.runs} runs (median), "
          f"{args.keystrokes} keystrokes; cipher {CIPHER}; one multiplexed ssh connection per path")
    for line in report(paths, args):
        print(line)
    if args.keep:
        print(f"scratch directory kept: {work}")
    if args.json:
        args.json.write_text(json.dumps({"load_average": load, "size_mib": args.size_mib, "runs": args.runs,
                                         "paths": [p.to_json() for p in paths]}, indent=2))
    return 1 if any(p.problem for p in paths) else 0


if __name__ == "__main__":
    sys.exit(main())
