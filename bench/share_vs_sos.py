#!/usr/bin/env python3
"""Benchmark `helpline share` against `sos report --batch` on this machine, in one run.

Each tool runs ``--runs`` times (sos ``--sos-runs``) after ``--warmup`` untimed
runs, the timed runs taking turns between the tools so that all see the same
background load; every run's wall time, peak memory of its whole process tree
and archive size are measured by :mod:`bench.measure`. Three rows:

- ``sos report``: Debian's sosreport, ``--batch --tmp-dir`` into a fresh directory;
- ``helpline share (upload)``: the full share to a ticket on a Helpline server
  started on loopback for the benchmark (the server's own cost is not counted);
- ``helpline share --output``: the same share written to a local file, no server.

Prints a table and the target verdicts, writes every figure with ``--json``.
Exits 0 when every tool ran, whatever the verdicts (it is a measurement), and 1
when a tool could not run at all. Run: ``.venv/bin/python bench/share_vs_sos.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from bench.measure import MB, Run, Summary, info_line, measure, ratio, summarize, verdict_line  # noqa: E402

WALL_RATIO_TARGET = 0.10  # Helpline's full share: at most one tenth of sos's wall time
PEAK_MEMORY_TARGET = 100 * MB  # ... with peak memory under 100 MB
HOST = "127.0.0.1"
SERVER_READY_TIMEOUT = 30.0
STEP_TIMEOUT = 60.0
INSTALL_TIMEOUT = 900.0
SHARE_ANSWERS = {"--what": "bench", "--since": "now", "--tried": "nothing"}

UNKNOWN_BUNDLE = "a run left not exactly one new *.tar.gz under the server's blobs/bundles/"

SOS = "sos report"
UPLOAD = "helpline share (upload)"
OUTPUT = "helpline share --output"


RunOnce = Callable[[str], Run]  # runs and measures a tool once; the argument names the run ("run-2")


class ToolUnavailable(Exception):
    """A tool cannot run at all here; the message says why and what to do."""


@dataclass
class Row:
    """One tool's runs and what is known about it."""

    name: str
    command: list[str] = field(default_factory=list)
    version: str | None = None
    error: str | None = None  # set when the tool could not run at all
    warmup_runs: list[Run] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> Summary:
        return summarize(self.runs)

    @property
    def measured(self) -> bool:
        return self.summary.runs_ok > 0

    def to_json(self) -> dict:
        return {
            "name": self.name, "command": self.command, "version": self.version, "error": self.error,
            "notes": self.notes, "summary": asdict(self.summary),
            "warmup_runs": [r.to_json() for r in self.warmup_runs], "runs": [r.to_json() for r in self.runs],
        }


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- sos -----------------------------------------------------------------------------------------

def find_sos() -> list[str] | None:
    """The argv prefix that starts a report: ``sos report`` (sos ≥ 4) or ``sosreport`` (older), else None.

    ``sosreport`` still exists in sos 4 but is a deprecated alias that sleeps half
    a second before starting, so ``sos report`` is preferred when it works.
    """
    sos = shutil.which("sos")
    if sos:
        try:
            probe = subprocess.run([sos, "report", "--help"], capture_output=True, text=True, timeout=STEP_TIMEOUT)
            if probe.returncode == 0 and "--batch" in probe.stdout:
                return [sos, "report"]
        except (OSError, subprocess.TimeoutExpired):
            pass
    legacy = shutil.which("sosreport")
    return [legacy] if legacy else None


def _head(path: Path, size: int = 4096) -> str:
    try:
        with path.open("rb") as fh:
            return fh.read(size).decode(errors="replace")
    except OSError:
        return ""


def install_sos() -> None:
    """Install Debian's sosreport package with apt-get; raise ToolUnavailable if that is not possible."""
    how = "install it with: sudo apt-get install -y sosreport (Fedora/RHEL: sudo dnf install -y sos)"
    if os.geteuid() != 0:
        raise ToolUnavailable(f"sos is not installed and this is not root; {how}")
    apt = shutil.which("apt-get")
    if not apt:
        raise ToolUnavailable(f"sos is not installed and apt-get is missing; {how}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "sosreport"]
    log("sos is not installed; running: apt-get install -y sosreport")
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        log("apt-get install failed; running apt-get update and trying again")
        subprocess.run([apt, "update", "-q"], env=env, capture_output=True, timeout=INSTALL_TIMEOUT)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
        raise ToolUnavailable(f"apt-get install -y sosreport failed ({done.returncode}): {last[0]}")


def sos_package_version() -> str | None:
    """The installed package's version (Debian ``sosreport``, or RPM ``sos``), None if unknown."""
    for argv in (["dpkg-query", "-W", "-f=${Version}", "sosreport"], ["rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}", "sos"]):
        if shutil.which(argv[0]):
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip()
    return None


def sos_version_from_output(text: str) -> str | None:
    """The version sos prints in its banner, e.g. ``sosreport (version 4.0)`` -> ``4.0``."""
    match = re.search(r"\(version ([^)\s]+)\)", text)
    return match.group(1) if match else None


def find_sos_archive(tmp_dir: Path) -> Path | None:
    """The report archive sos left in ``tmp_dir`` (not its checksum file), None if there is none."""
    candidates = [
        p for p in tmp_dir.iterdir()
        if p.is_file() and p.name.startswith(("sosreport-", "sos-")) and ".tar" in p.name
        and not p.name.endswith((".md5", ".sha256"))
    ]
    return max(candidates, key=lambda p: p.stat().st_size) if candidates else None


def prepare_sos(row: Row, args: argparse.Namespace, work: Path) -> RunOnce:
    """Find (or install) sos; return the function that runs and measures it once."""
    prefix = find_sos()
    if prefix is None:
        if not args.install:
            raise ToolUnavailable("sos is not installed; install it with: sudo apt-get install -y sosreport")
        install_sos()
        prefix = find_sos()
        if prefix is None:
            raise ToolUnavailable("sosreport was installed but neither `sos` nor `sosreport` is on PATH")
    row.command = [*prefix, "--batch", "--tmp-dir", "TMP", "--case-id", "bench"]
    package = sos_package_version()
    if package:
        row.notes.append(f"package version {package}")
    if args.warmup == 0:
        row.notes.append("no warm-up: a cold-cache first run of sos is much slower than the next ones")

    def one(name: str) -> Run:
        tmp = work / "sos" / name
        tmp.mkdir(parents=True)
        argv = [*prefix, "--batch", "--tmp-dir", str(tmp), "--case-id", "bench"]
        # cwd is the scratch directory: sosreport puts the working directory first on sys.path.
        run = measure(argv, timeout=args.sos_timeout, log_dir=work / "logs", cwd=tmp, name=f"sos-{name}")
        archive = find_sos_archive(tmp)
        if archive is not None:
            run.archive_bytes, run.archive_path = archive.stat().st_size, str(archive)
        elif run.ok:
            run.problem = f"exited 0 but left no archive in {tmp}"
        row.version = sos_version_from_output(_head(work / "logs" / f"sos-{name}.stdout")) or row.version
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)  # the archive holds this machine's secrets
        return run

    row.version = package
    return one


# --- Helpline -------------------------------------------------------------------------------------

def helpline_bin() -> str:
    """The `helpline` console script next to this interpreter (the venv's), else the one on PATH."""
    candidate = Path(sys.executable).with_name("helpline")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("helpline")
    if not found:
        raise ToolUnavailable("the helpline command is not installed; run: pip install -e '.[server]' in a venv")
    return found


def script_interpreter(script: str) -> str:
    """The Python a console script runs with (its ``#!`` line), else this one."""
    try:
        first = Path(script).read_bytes()[:256].split(b"\n", 1)[0].decode()
    except (OSError, UnicodeDecodeError):
        return sys.executable
    if first.startswith("#!") and "python" in first:
        words = first[2:].split()
        if words and Path(words[0]).name.startswith("python") and Path(words[0]).exists():
            return words[0]
    return sys.executable


#: Compile the bytecode of Helpline's packages as the interpreter running `helpline` imports them.
#: Then fill the agent's cache of compiled patterns, as installing the agent does (``python -m agent.regexes``).
COMPILE_BYTECODE = ("import compileall, importlib, sys; ok = all(compileall.compile_dir("
                    "importlib.import_module(p).__path__[0], quiet=1) for p in ('cli', 'agent', 'protocol')); "
                    "from agent import regexes; regexes.warm(); sys.exit(0 if ok else 1)")


def compile_bytecode(helpline: str, env: dict[str, str]) -> str | None:
    """Compile Helpline's bytecode, as installing it does; return why not, or None.

    An installed package has its ``.pyc`` files; a source checkout run with
    PYTHONDONTWRITEBYTECODE (or whose sources just changed) would compile every
    changed module on every run, a cost no installed copy pays (nor sos, whose
    package ships compiled).
    """
    try:
        # -P: the packages are found as `helpline` finds them (PYTHONPATH first), not in the working directory.
        done = subprocess.run([script_interpreter(helpline), "-P", "-c", COMPILE_BYTECODE], capture_output=True,
                              text=True, env=env, timeout=STEP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not compile Helpline's bytecode first: {exc}"
    if done.returncode != 0:
        return f"could not compile all of Helpline's bytecode first: {(done.stderr or done.stdout).strip()[-200:]}"
    return None


def clean_env(config_dir: Path, agent_dir: Path) -> dict[str, str]:
    """This environment with Helpline pointed at the benchmark's own directories only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
    env.update(HELPLINE_CONFIG_DIR=str(config_dir), HELPLINE_AGENT_DIR=str(agent_dir), NO_COLOR="1", COLUMNS="200")
    return env


def share_help(helpline: str, env: dict[str, str]) -> str:
    """`helpline share --help` text; raise ToolUnavailable if this build has no share command."""
    try:
        done = subprocess.run([helpline, "share", "--help"], capture_output=True, text=True, env=env, timeout=STEP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolUnavailable(f"`helpline share --help` could not run: {exc}") from exc
    if done.returncode != 0:
        raise ToolUnavailable(f"this Helpline has no working `share` command yet (`helpline share --help` exited "
                              f"{done.returncode}); the Helpline rows were not measured")
    return done.stdout


def share_answers(help_text: str) -> list[str]:
    """The answers to share's questions (--what/--since/--tried) that this build's share accepts."""
    argv: list[str] = []
    for option, value in SHARE_ANSWERS.items():
        if re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text):
            argv += [option, value]
    return argv


def helpline_version(helpline: str) -> str | None:
    try:
        done = subprocess.run([helpline, "--version"], capture_output=True, text=True, timeout=STEP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class LocalServer:
    """A Helpline server on loopback with a ticket this PC is paired to, set up as an admin would."""

    def __init__(self, helpline: str, root: Path):
        self.helpline = helpline
        self.root = root
        self.data_dir = root / "data"
        self.env = clean_env(root / "config", root / "agent")
        self.password = secrets.token_urlsafe(18)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.ticket: str | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def step(self, *args: str, stdin: str | None = None) -> str:
        """Run one `helpline` setup command; return its stdout or raise ToolUnavailable with its error."""
        try:
            done = subprocess.run([self.helpline, *args], input=stdin or "", capture_output=True, text=True,
                                  env=self.env, timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise ToolUnavailable(f"server setup: `helpline {' '.join(args)}` took over {STEP_TIMEOUT:.0f} s") from exc
        if done.returncode != 0:
            detail = " ".join((done.stderr.strip() or done.stdout.strip()).splitlines()[:2])
            raise ToolUnavailable(f"server setup: `helpline {' '.join(args)}` exited {done.returncode}: {detail}")
        return done.stdout

    def start(self) -> None:
        """Init the data dir, run the server, log in, open a ticket and pair this PC to it."""
        self.step("server", "init", "--data-dir", str(self.data_dir), "--admin", "bench", "--password-stdin",
                  stdin=self.password + "\n")
        server_log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            [self.helpline, "server", "run", "--data-dir", str(self.data_dir), "--host", HOST,
             "--port", str(self.port), "--no-access-log"],
            stdin=subprocess.DEVNULL, stdout=server_log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )
        server_log.close()
        self.wait_ready()
        self.step("login", self.url, "-u", "bench", "--password-stdin", stdin=self.password + "\n")
        self.ticket = json.loads(self.step("ticket", "create", "bench", "--json"))["number"]
        code = json.loads(self.step("ticket", "pair-code", self.ticket, "--json"))["code"]
        self.step("pair", code, "--server", self.url)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ToolUnavailable(f"the Helpline server exited with status {self.process.returncode} while starting; "
                                      f"see {self.root / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise ToolUnavailable(f"the Helpline server was not ready within {SERVER_READY_TIMEOUT:.0f} s; "
                              f"see {self.root / 'server.log'}")

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL to its group after a bounded wait."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def stored_bundles(self) -> dict[Path, int]:
        """Every stored bundle archive and its size (the server keeps them as blobs/bundles/**/*.tar.gz)."""
        root = self.data_dir / "blobs" / "bundles"
        return {p: p.stat().st_size for p in root.rglob("*.tar.gz") if p.is_file()} if root.is_dir() else {}


def prepare_output(row: Row, args: argparse.Namespace, work: Path) -> RunOnce:
    """Return the function that runs and measures `helpline share --output` once, from a never-paired PC."""
    helpline = helpline_bin()
    env = clean_env(work / "output-pc" / "config", work / "output-pc" / "agent")
    problem = compile_bytecode(helpline, env)
    if problem:
        row.notes.append(problem)
    answers = share_answers(share_help(helpline, env))
    row.command = [helpline, "share", "--yes", "--output", "FILE.tar.gz", *answers]
    row.version = helpline_version(helpline)

    def one(name: str) -> Run:
        target = work / "output" / f"{name}.tar.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        argv = [helpline, "share", "--yes", "--output", str(target), *answers]
        run = measure(argv, timeout=args.helpline_timeout, log_dir=work / "logs", env=env, cwd=work, name=f"output-{name}")
        if target.is_file():
            run.archive_bytes, run.archive_path = target.stat().st_size, str(target)
        elif run.ok:
            run.problem = f"exited 0 but wrote no {target}"
        return run

    return one


def prepare_upload(row: Row, args: argparse.Namespace, work: Path, cleanup: ExitStack) -> RunOnce:
    """Start a server on loopback with a ticket this PC is paired to (stopped by ``cleanup``); return the
    function that runs and measures the full `helpline share --ticket` once."""
    helpline = helpline_bin()
    server = LocalServer(helpline, work / "upload-pc")
    problem = compile_bytecode(helpline, server.env)
    if problem:
        row.notes.append(problem)
    answers = share_answers(share_help(helpline, server.env))
    row.version = helpline_version(helpline)
    row.notes.append("the server runs on loopback for this row; only the `helpline share` process tree is measured")
    cleanup.callback(server.stop)
    log(f"starting a Helpline server on {HOST}:{server.port} and pairing a ticket")
    server.start()
    argv = [helpline, "share", "--yes", "--ticket", server.ticket, *answers]
    row.command = argv

    def one(name: str) -> Run:
        before = server.stored_bundles()
        run = measure(argv, timeout=args.helpline_timeout, log_dir=work / "logs", env=server.env, cwd=work,
                      name=f"upload-{name}")
        new = {p: size for p, size in server.stored_bundles().items() if p not in before}
        if len(new) == 1:
            (path, size), = new.items()
            run.archive_bytes, run.archive_path = size, str(path)
        elif run.ok and not any(note.startswith(UNKNOWN_BUNDLE) for note in row.notes):
            row.notes.append(f"{UNKNOWN_BUNDLE} (first: {name}, {len(new)} new files); its archive size is unknown")
        return run

    return one


# --- running and reporting ------------------------------------------------------------------------

def run_interleaved(plan: list[tuple[Row, RunOnce, int]], warmup: int) -> None:
    """Warm every row up, then run them in rounds (sos, share, share, sos, …) so that both tools see the
    same background load; a row that fails before any run of it has worked is dropped with its reason."""

    def attempt(row: Row, one: RunOnce, name: str, runs: list[Run]) -> None:
        log(f"{row.name}: {name} ...")
        run = one(name)
        runs.append(run)
        log(f"{row.name}: {name}: " + (f"{run.wall_s:.2f} s, {run.peak_rss_bytes / MB:.0f} MB" if run.ok else run.failure()))
        if not run.ok and not any(r.ok for r in row.warmup_runs + row.runs):
            row.error = f"{row.name} failed: {run.failure()}"

    for row, one, _ in plan:
        for i in range(warmup):
            if not row.error:
                attempt(row, one, f"warmup-{i + 1}", row.warmup_runs)
    for i in range(max((count for _, _, count in plan), default=0)):
        for row, one, count in plan:
            if i < count and not row.error:
                attempt(row, one, f"run-{i + 1}", row.runs)


def _fmt(value: float | None, scale: float = 1, places: int = 2) -> str:
    return "n/a" if value is None else f"{value / scale:.{places}f}"


def table(rows: list[Row]) -> str:
    header = ("tool", "runs ok", "wall median s", "wall min s", "peak MB median", "peak MB max",
              "largest process MB", "archive MB")
    lines = [header]
    for row in rows:
        s = row.summary
        single = max((r.peak_single_rss_bytes for r in row.runs if r.ok), default=None)
        lines.append((row.name, f"{s.runs_ok}/{len(row.runs)}", _fmt(s.wall_s_median), _fmt(s.wall_s_min),
                      _fmt(s.peak_rss_bytes_median, MB, 1), _fmt(s.peak_rss_bytes_max, MB, 1),
                      _fmt(single, MB, 1), _fmt(s.archive_bytes_median, MB, 3)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def verdicts(sos: Row, helpline_rows: list[Row]) -> tuple[list[str], dict]:
    """The target lines for each Helpline row against sos, and the ratios behind them."""
    lines: list[str] = []
    figures: dict = {}
    s = sos.summary
    for row in helpline_rows:
        h = row.summary
        who = "helpline" if row.name == UPLOAD else "helpline --output"
        wall = ratio(h.wall_s_median, s.wall_s_median)
        memory = ratio(h.peak_rss_bytes_median, s.peak_rss_bytes_median)
        size = ratio(h.archive_bytes_median, s.archive_bytes_median)
        figures[row.name] = {"wall_time_ratio": wall, "peak_memory_ratio": memory, "archive_size_ratio": size,
                             "peak_rss_bytes_max": h.peak_rss_bytes_max}
        runs = f" (highest of {h.runs_ok} runs)" if h.runs_ok > 1 else ""
        lines += [
            verdict_line(f"wall time ratio {who}/sos", wall, WALL_RATIO_TARGET, op="<="),
            verdict_line(f"peak memory {who}{runs}", None if h.peak_rss_bytes_max is None else h.peak_rss_bytes_max / MB,
                         PEAK_MEMORY_TARGET / MB, op="<", unit=" MB", decimals=0),
            info_line(f"peak memory ratio {who}/sos", memory),
            info_line(f"archive size ratio {who}/sos", size),
        ]
    return lines, figures


def machine_facts() -> dict:
    mem = psutil.virtual_memory()
    return {"hostname": platform.node(), "kernel": platform.release(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "memory_bytes": mem.total, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compare `helpline share` with `sos report --batch` on this machine.")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each Helpline row (0 skips them; default 3)")
    parser.add_argument("--sos-runs", type=int, default=1, help="timed runs of sos (0 skips it; default 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of every tool before its timed runs (default 1)")
    parser.add_argument("--sos-timeout", type=float, default=600, help="seconds before a sos run is killed (default 600)")
    parser.add_argument("--helpline-timeout", type=float, default=120, help="seconds before a share is killed (default 120)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--work-dir", type=Path, help="where to make the scratch directory (default: the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory, archives and logs")
    parser.add_argument("--no-install", dest="install", action="store_false", help="do not apt-get install sosreport if missing")
    args = parser.parse_args(argv)
    for name in ("runs", "sos_runs", "warmup"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.work_dir:  # a fresh directory inside it, so cleaning up never touches what was there
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="helpline-bench-", dir=args.work_dir))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    facts = machine_facts()
    sos, upload, output = Row(SOS), Row(UPLOAD), Row(OUTPUT)
    selected = ([sos] if args.sos_runs else []) + ([output, upload] if args.runs else [])

    with ExitStack() as cleanup:
        plan = []
        for row, prepare, count in ((sos, lambda: prepare_sos(sos, args, work), args.sos_runs),
                                    (output, lambda: prepare_output(output, args, work), args.runs),
                                    (upload, lambda: prepare_upload(upload, args, work, cleanup), args.runs)):
            if row in selected:
                try:
                    plan.append((row, prepare(), count))
                except ToolUnavailable as exc:
                    row.error = str(exc)
        run_interleaved(plan, args.warmup)
    for row in selected:
        if row.error:
            log(f"{row.name}: NOT MEASURED: {row.error}")

    rows = [sos, upload, output]
    lines, figures = verdicts(sos, [row for row in (upload, output) if row in selected])
    report = [
        f"share vs sos on {facts['hostname']} ({facts['cpus']} CPUs, {facts['memory_bytes'] / 2**30:.0f} GiB, "
        f"kernel {facts['kernel']}, load average at start {' '.join(map(str, facts['loadavg']))})",
        f"sos: version {sos.version or 'unknown'}; command: {' '.join(sos.command) or 'not run'}",
        f"helpline: version {(upload.version or output.version or 'unknown').removeprefix('helpline ')}; "
        f"command: {' '.join(upload.command or output.command) or 'not run'}",
        f"warm-up: {args.warmup} untimed run(s) of every tool before its timed runs; "
        "figures are over the timed runs that succeeded",
        "memory: RSS summed over the command's whole process tree, sampled every 20 ms (the server is not counted); "
        "MB = 10^6 bytes; largest process: the highest RSS of any one process in the tree",
        "",
        table([row for row in rows if row in selected] or rows),
        "",
        *[f"{row.name}: note: {note}" for row in rows if row in selected for note in row.notes],
        *[f"{row.name}: NOT MEASURED: {row.error}" for row in rows if row.error],
        *[f"{row.name}: {n} run(s) failed: {'; '.join(row.summary.failures)}" for row in rows
          if not row.error and (n := row.summary.runs_failed)],
        *lines,
    ]
    print("\n".join(report))

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "started_at": started, "machine": facts,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "targets": {"wall_time_ratio_max": WALL_RATIO_TARGET, "peak_rss_bytes_below": PEAK_MEMORY_TARGET},
            "rows": {row.name: row.to_json() for row in rows}, "ratios": figures, "verdicts": lines,
        }, indent=2) + "\n")
        print(f"figures written to {args.json}")

    could_not_run = [row for row in selected if not row.measured]
    if args.keep or could_not_run:
        print(f"logs and scratch files kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if could_not_run else 0


if __name__ == "__main__":
    sys.exit(main())
