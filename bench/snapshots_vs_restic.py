#!/usr/bin/env python3
"""Snapshots through Helpline against raw restic, on one generated tree, in one run.

The tree is generated from a fixed seed (by default about 1 GiB in 20,000
files of mixed sizes: many small, some medium, a few large; random content,
so nothing compresses or deduplicates). Then, each in its own fresh
repository:

1. raw ``restic backup`` and ``restic restore latest`` into a local repository;
2. the same through ``helpline snapshot now`` and ``helpline restore`` (local
   repository), target: within 5 % of raw restic's time. Each repository is
   created before the clock starts (``restic init`` for raw restic, a first
   snapshot of an empty folder for Helpline, which creates its own);
3. (unless ``--no-server``) the same through the Helpline server's REST
   repository (``helpline server run`` on loopback, the PC enrolled), target:
   at least 80 % of the local repository's throughput through Helpline, with
   the server's peak memory.

Every timed step starts after a sync (none pays for the writeback of what the
step before it wrote). The local backups and restores run ``--runs`` times
each, taken in turn raw/Helpline (each backup into a fresh repository of its
own; the last pair's repositories serve the restores), who goes first
alternating, the restores after an untimed one of each; the medians compared: a
slow spell of a noisy machine falls on both alike, and so does whatever favours
the first run of a pair. It prints every run's wall time and throughput and the
ratios with their verdicts. Exits 0 when it measured (look for FAIL), 1 when a run failed.
``--small`` is a fast smoke scale (tests/bench). Run:
``.venv/bin/python bench/snapshots_vs_restic.py`` (``--work-dir`` on a disk with
room for about four copies of the tree).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import MB, Run, TreeSampler, kcmp_same_address_space, measure, ratio, tree_digest  # noqa: E402
from tests.support.live import ADMIN, ADMIN_PASSWORD, LiveServer, helpline_bin  # noqa: E402

SEED = 20261202
FULL = {"files": 20_000, "bytes": 1 << 30}
SMALL = {"files": 300, "bytes": 8 << 20}
TIMEOUT = 3600.0
HELPLINE_TARGET = 1.05  # helpline's time / raw restic's time, at most
SERVER_TARGET = 0.80  # server-repository throughput / local-repository throughput, at least


@dataclass
class Row:
    """One measured operation."""

    name: str
    wall_s: float
    bytes: int
    peak_rss_bytes: int
    ok: bool
    problem: str = ""

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.wall_s if self.wall_s > 0 else 0.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sizes(files: int, total: int, rng: random.Random) -> list[int]:
    """``files`` sizes summing to about ``total``: 75 % small (≤ 16 KiB), 24.5 % medium (≤ 128 KiB), 0.5 % large
    (1 to 16 MiB), which hold most of the bytes, as in a home folder."""
    kinds = [rng.random() for _ in range(files)]
    raw = [rng.randint(0, 16 << 10) if k < 0.75 else rng.randint(16 << 10, 128 << 10) if k < 0.995
           else rng.randint(1 << 20, 16 << 20) for k in kinds]
    scale = total / max(1, sum(raw))
    return [max(0, int(size * scale)) for size in raw]


def generate(root: Path, files: int, total: int, seed: int) -> int:
    """Write the tree under ``root`` (folders of 100 files, nested two deep); return its size in bytes."""
    rng = random.Random(seed)
    written = 0
    for index, size in enumerate(sizes(files, total, rng)):
        folder = root / f"d{index // 2000:02}" / f"s{(index // 100) % 20:02}"
        folder.mkdir(parents=True, exist_ok=True)
        # random.randbytes is seeded, so the same tree every run; written in chunks to keep memory flat.
        with open(folder / f"f{index:05}.bin", "wb") as out:
            left = size
            while left:
                chunk = min(left, 4 << 20)
                out.write(rng.randbytes(chunk))
                left -= chunk
        written += size
    return written


def row(name: str, run: Run, size: int, problem: str = "") -> Row:
    problem = problem or (run.failure() if not run.ok else "")
    done = Row(name, run.wall_s, size, run.peak_rss_bytes, not problem, problem)
    log(f"  {name}: {run.wall_s:.2f} s, {done.mb_per_s:.1f} MB/s" + (f"  FAILED: {problem}" if problem else ""))
    return done


def restic_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "HELPLINE_"))}


def settled_measure(argv: list[str], **kwargs) -> Run:
    """:func:`measure` after a sync: no step pays for the writeback of the gigabyte the step before it wrote."""
    os.sync()
    return measure(argv, **kwargs)


def in_turn(steps: list, attempt: int) -> list:
    """The raw/Helpline pair of one attempt, in the order that attempt takes them: raw first in odd attempts,
    Helpline first in even ones, so that whatever favours the first run of a pair (a fresh file system's free
    space, the page cache) favours each tool alike."""
    return steps if attempt % 2 else list(reversed(steps))


def raw_restic(tree: Path, size: int, work: Path, attempt: int = 1) -> tuple[Callable[[], Row], list[str]]:
    """Raw restic: init (untimed) a fresh repository; the backup into it as a step to take (its row), and the
    restore's argv (restores are taken later, in turn). The repository of the attempt before is removed first."""
    shutil.rmtree(work / f"raw-repo-{attempt - 1}", ignore_errors=True)
    shutil.rmtree(work / f"raw-cache-{attempt - 1}", ignore_errors=True)
    repo, password, cache = work / f"raw-repo-{attempt}", work / "raw-password", work / f"raw-cache-{attempt}"
    password.write_text("bench-password\n")
    base = ["restic", "--repo", str(repo), "--password-file", str(password), "--cache-dir", str(cache)]
    subprocess.run([*base, "init"], check=True, capture_output=True, env=restic_env(), timeout=120)

    def backup() -> Row:
        taken = settled_measure([*base, "backup", "--json", "--host", "bench", str(tree)], timeout=TIMEOUT,
                                log_dir=work / "logs", env=restic_env(), name=f"raw-backup-{attempt}")
        return row("restic backup (local)", taken, size)

    return backup, [*base, "restore", "latest", "--target"]


def raw_restore(argv: list[str], tree: Path, size: int, work: Path, expected: str, attempt: int) -> Row:
    """One raw ``restic restore`` into a fresh folder, checked and then removed."""
    target = work / "raw-restore"
    shutil.rmtree(target, ignore_errors=True)
    restore = settled_measure([*argv, str(target)], timeout=TIMEOUT, log_dir=work / "logs", env=restic_env(),
                              name=f"raw-restore-{attempt}")
    restored = target.joinpath(*tree.parts[1:])
    problem = "" if restored.is_dir() and tree_digest(restored) == expected else "the restored tree differs"
    shutil.rmtree(target, ignore_errors=True)
    return row("restic restore (local)", restore, size, problem)


def agent_env(work: Path, name: str, tree: Path, *, local: bool, server: bool) -> dict[str, str]:
    """The environment of a PC whose policy snapshots ``tree`` (call :func:`point_at` to change that)."""
    home = work / name
    home.mkdir(parents=True, exist_ok=True)
    env = restic_env()
    env.update({"HELPLINE_AGENT_DIR": str(home / "agent"), "HELPLINE_CONFIG_DIR": str(home / "config"),
                "HELPLINE_AGENT_CONFIG": str(home / "agent.toml"), "NO_COLOR": "1", "HOME": str(home)})
    point_at(env, tree, local=local, server=server)
    return env


def point_at(env: dict[str, str], tree: Path, *, local: bool, server: bool) -> None:
    """Write the PC's policy: snapshot ``tree`` into the local and/or the server's repository."""
    home = Path(env["HOME"])
    Path(env["HELPLINE_AGENT_CONFIG"]).write_text("\n".join([
        "[snapshots]", f'paths = ["{tree}"]', f"server = {'true' if server else 'false'}",
        f"local = {'true' if local else 'false'}", "default_excludes = false", "free_space_margin = 0",
        f'local_repository = "{home / "repo"}"',
    ]) + "\n")


def prepared(env: dict[str, str], tree: Path, work: Path, *, local: bool, server: bool) -> dict[str, str]:
    """Let Helpline create its repository (password, ``restic init``, escrow) untimed, with a snapshot of an empty
    folder, as raw restic's ``init`` is untimed; then point the policy at ``tree``."""
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    point_at(env, empty, local=local, server=server)
    subprocess.run([helpline_bin(), "snapshot", "now"], check=True, capture_output=True, env=env, timeout=600)
    point_at(env, tree, local=local, server=server)
    return env


def helpline_snapshot(size: int, work: Path, env: dict[str, str], where: str, repository: str,
                      attempt: int = 1) -> Row:
    """``helpline snapshot now`` with the PC's agent folder in ``env``."""
    snap = settled_measure([helpline_bin(), "snapshot", "now", "--repository", repository], timeout=TIMEOUT,
                           log_dir=work / "logs", env=env, name=f"helpline-snapshot-{where}-{attempt}")
    return row(f"helpline snapshot now ({where})", snap, size)


def helpline_restore(tree: Path, size: int, work: Path, expected: str, env: dict[str, str], where: str,
                     repository: str, attempt: int = 1) -> Row:
    """``helpline restore`` into a fresh folder, checked and then removed."""
    target = work / f"helpline-restore-{where}"
    shutil.rmtree(target, ignore_errors=True)
    back = settled_measure([helpline_bin(), "restore", str(tree), "--repository", repository, "--to", str(target),
                            "--json"], timeout=TIMEOUT, log_dir=work / "logs", env=env,
                           name=f"helpline-restore-{where}-{attempt}")
    restored = target / tree.name
    problem = "" if restored.is_dir() and tree_digest(restored) == expected else "the restored tree differs"
    shutil.rmtree(target, ignore_errors=True)
    return row(f"helpline restore ({where})", back, size, problem)


def median_row(rows: list[Row]) -> Row:
    """The run in the middle by wall time (a failed run is never hidden: it is returned if there is one)."""
    failed = [r for r in rows if not r.ok]
    return failed[0] if failed else sorted(rows, key=lambda r: r.wall_s)[len(rows) // 2]


def with_server(tree: Path, size: int, work: Path, expected: str) -> tuple[list[Row], int]:
    """Start a server on loopback, enroll a PC, snapshot and restore through its REST repository; return the rows
    and the server's peak memory over both."""
    server = LiveServer(data_dir=work / "server")
    server.data_dir.mkdir(parents=True, exist_ok=True)
    server.init()
    server.start()
    try:
        env = agent_env(work, "server-pc", tree, local=False, server=True)
        helpline = helpline_bin()
        subprocess.run([helpline, "login", server.url, "-u", ADMIN, "--password-stdin"], input=ADMIN_PASSWORD + "\n",
                       text=True, check=True, capture_output=True, env=env, timeout=120)
        token = json.loads(subprocess.run([helpline, "enroll-token", "create", "--json"], text=True, check=True,
                                          capture_output=True, env=env, timeout=120).stdout)["token"]
        subprocess.run([helpline, "agent", "enroll", server.url, token], text=True, check=True, capture_output=True,
                       env=env, timeout=120)
        prepared(env, tree, work, local=False, server=True)
        sampler = TreeSampler(server.process.pid, 0.05, kcmp_same_address_space())
        sampler.start()
        try:
            rows = [helpline_snapshot(size, work, env, "server", "server"),
                    helpline_restore(tree, size, work, expected, env, "server", "server")]
        finally:
            sampler.stop()
        return rows, sampler.peak_rss
    finally:
        server.stop()


def verdict(label: str, value: float | None, target: float, *, at_most: bool) -> str:
    if value is None:
        return f"{label} = n/a: NOT MEASURED"
    passes = value <= target if at_most else value >= target
    return f"{label} = {value:.3f} (target {'≤' if at_most else '≥'} {target:.2f}): {'PASS' if passes else 'FAIL'}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a fast smoke scale instead of about 1 GiB")
    parser.add_argument("--files", type=int, help="how many files (default 20000, or 300 with --small)")
    parser.add_argument("--bytes", type=int, help="about how many bytes in all (default 1 GiB, or 8 MiB with --small)")
    parser.add_argument("--seed", type=int, default=SEED, help="the generator's seed (fixed by default)")
    parser.add_argument("--runs", type=int, default=3,
                        help="local backups and restores of each kind, taken in turn raw/Helpline; the median counts "
                             "(default 3)")
    parser.add_argument("--no-server", action="store_true", help="leave out the server's REST repository")
    parser.add_argument("--work-dir", type=Path, help="where the tree and repositories go (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = SMALL if args.small else FULL
    files, total = args.files or scale["files"], args.bytes or scale["bytes"]
    if shutil.which("restic") is None:
        log("restic is not installed: nothing measured")
        return 1
    work = Path(tempfile.mkdtemp(prefix="helpline-bench-", dir=args.work_dir))
    try:
        tree = work / "tree"
        log(f"generating {files} files, about {total / MB:.0f} MB (seed {args.seed}) in {tree}")
        size = generate(tree, files, total, args.seed)
        expected = tree_digest(tree)
        os.sync()  # the first measured run must not pay for writing the generated tree back to disk
        log(f"local backups, {args.runs} of each into fresh repositories, taken in turn, who goes first alternating "
            "(the median counts):")
        raw_backups, helpline_backups = [], []
        for attempt in range(1, args.runs + 1):
            # Each attempt's repositories are created (untimed) before either backup; who goes first alternates.
            shutil.rmtree(work / f"local-pc-{attempt - 1}", ignore_errors=True)
            local_env = prepared(agent_env(work, f"local-pc-{attempt}", tree, local=True, server=False), tree, work,
                                 local=True, server=False)
            raw_step, restore_argv = raw_restic(tree, size, work, attempt)
            steps = [lambda: raw_backups.append(raw_step()),
                     lambda: helpline_backups.append(helpline_snapshot(size, work, local_env, "local", "local",
                                                                       attempt))]
            for step in in_turn(steps, attempt):
                step()
        log(f"local restores, {args.runs} of each after an untimed one of each, taken in turn, who goes first "
            "alternating (the median counts):")
        raw_restore(restore_argv, tree, size, work, expected, 0)
        helpline_restore(tree, size, work, expected, local_env, "local", "local", 0)
        raw_runs, helpline_runs = [], []
        for attempt in range(1, args.runs + 1):
            steps = [lambda: raw_runs.append(raw_restore(restore_argv, tree, size, work, expected, attempt)),
                     lambda: helpline_runs.append(helpline_restore(tree, size, work, expected, local_env, "local",
                                                                   "local", attempt))]
            for step in in_turn(steps, attempt):
                step()
        every_run = {"restic backup (local)": [r.wall_s for r in raw_backups],
                     "helpline snapshot now (local)": [r.wall_s for r in helpline_backups],
                     "restic restore (local)": [r.wall_s for r in raw_runs],
                     "helpline restore (local)": [r.wall_s for r in helpline_runs]}
        rows = [median_row(raw_backups), median_row(raw_runs), median_row(helpline_backups),
                median_row(helpline_runs)]
        server_peak = None
        if not args.no_server:
            log("through helpline, the server's REST repository:")
            server_rows, server_peak = with_server(tree, size, work, expected)
            rows += server_rows
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {r.name: r for r in rows}

    def wall(name: str) -> float | None:
        found = by.get(name)
        return found.wall_s if found is not None and found.ok else None

    print(f"Tree: {files} files, {size / MB:.1f} MB, seed {args.seed}")
    print(f"Every timed step starts after a sync; local backups and restores: {args.runs} of each, taken in turn "
          "(who goes first alternating; the restores after an untimed one of each), "
          "the median shown")
    print("| operation | wall s | MB/s | peak RSS MB | ok | every run (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        every = " ".join(f"{w:.2f}" for w in every_run.get(r.name, [r.wall_s]))
        print(f"| {r.name} | {r.wall_s:.2f} | {r.mb_per_s:.1f} | {r.peak_rss_bytes / MB:.0f} | "
              f"{'yes' if r.ok else 'NO: ' + r.problem} | {every} |")
    if server_peak is not None:
        print(f"server peak RSS during its snapshot and restore: {server_peak / MB:.0f} MB")
    verdicts = [
        verdict("backup time helpline/restic (local)", ratio(wall("helpline snapshot now (local)"),
                                                              wall("restic backup (local)")), HELPLINE_TARGET, at_most=True),
        verdict("restore time helpline/restic (local)", ratio(wall("helpline restore (local)"),
                                                               wall("restic restore (local)")), HELPLINE_TARGET, at_most=True),
    ]
    if not args.no_server:
        verdicts += [
            verdict("backup throughput server/local", ratio(wall("helpline snapshot now (local)"),
                                                             wall("helpline snapshot now (server)")), SERVER_TARGET,
                    at_most=False),
            verdict("restore throughput server/local", ratio(wall("helpline restore (local)"),
                                                              wall("helpline restore (server)")), SERVER_TARGET,
                    at_most=False),
        ]
    for line in verdicts:
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"files": files, "bytes": size, "seed": args.seed, "runs": args.runs,
                                         "runs_s": every_run,
                                         "rows": [asdict(r) | {"mb_per_s": r.mb_per_s} for r in rows],
                                         "server_peak_rss_bytes": server_peak, "verdicts": verdicts}, indent=2))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
