#!/usr/bin/env python3
"""restic through the server's REST repository against restic on a local repository, on the same tree.

The target: **backup and restore through the server's REST repository at least
80 % of the local repository's throughput**, with the server's peak memory
printed. In one run the script generates a tree (``--files`` files of mixed
sizes, ``--mib`` MiB in all, fixed ``--seed``), then for each repository
(local folder, then the server's REST repository on loopback) runs restic
``init`` (untimed) and ``backup`` (timed, ``bench/measure.py``: wall time and
peak memory of restic's process tree), and then ``--runs`` restores of each,
taken in turn local, REST, local, REST… (the medians are compared: a slow spell
of a noisy machine falls on both alike), each checked byte-identical. Every
timed step starts after a sync, so none pays for the writeback of the gigabyte
the step before it wrote. The server (`helpline server run`, SQLite, local blob
folder, no access log) is sampled for its peak memory while the REST runs go.

The PC is enrolled with the real CLI and asks for its repository credential
over its signed channel, as the agent does; restic reads the URL and the
password from 0600 files and keeps its usual cache (one per repository, as an
agent's restic does: the tree blobs then come from the cache, not one request
each).

Exits 0 when it measured (look for FAIL), 1 when it could not (no restic, the
server did not start). Run: ``.venv/bin/python bench/restic_rest.py`` (about 1 GiB
and 20k files by default; ``--mib 200 --files 4000`` for a quicker look).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import MB, Run, TreeSampler, kcmp_same_address_space, measure, tree_digest  # noqa: E402
from tests.support.live import PC, LiveServer  # noqa: E402

PASSWORD = "bench-repository-password"
TARGET = 0.80
MiB = 1024 * 1024
RUN_TIMEOUT = 3600.0
#: The server's memory is sampled this often during the REST runs. Each sample lists the process tree (a scan of
#: /proc) in this script's process, which shares the CPUs with restic and the server during the REST runs only:
#: every 20 ms (restic's own sampling) that cost a visible part of a CPU on a busy machine and counted against REST.
SERVER_SAMPLE_INTERVAL = 0.2


class NotMeasured(Exception):
    pass


def generate_tree(root: Path, files: int, total_bytes: int, seed: int) -> int:
    """``files`` files of mixed sizes (many small, a few large) summing to about ``total_bytes``; the real sum."""
    rng = random.Random(seed)
    weights = [rng.paretovariate(1.2) for _ in range(files)]
    scale = total_bytes / sum(weights)
    written = 0
    for i, weight in enumerate(weights):
        folder = root / f"dir{i % 97:02d}" / f"sub{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        size = int(weight * scale)
        (folder / f"file{i:05d}.bin").write_bytes(rng.randbytes(size))
        written += size
    return written


@dataclass
class Repository:
    name: str
    folder: Path
    location: str  # what restic's --repository-file holds

    def files(self) -> tuple[Path, Path]:
        self.folder.mkdir(parents=True, exist_ok=True)
        repository_file, password_file = self.folder / "repository", self.folder / "password"
        for path, text in ((repository_file, self.location + "\n"), (password_file, PASSWORD + "\n")):
            path.write_text(text)
            path.chmod(0o600)
        return repository_file, password_file

    def argv(self, *args: str) -> list[str]:
        repository_file, password_file = self.files()
        return ["restic", "--repository-file", str(repository_file), "--password-file", str(password_file),
                "--cache-dir", str(self.folder / "cache"), *args]


def restic_env(folder: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(folder)}


def settled() -> None:
    """Write out what earlier steps left dirty, so no timed step pays for the previous step's writeback."""
    os.sync()


def backup(repo: Repository, tree: Path, work: Path) -> Run:
    env = restic_env(repo.folder)
    init = subprocess.run(repo.argv("init"), capture_output=True, text=True, env=env, timeout=300)
    if init.returncode != 0:
        raise NotMeasured(f"restic init on the {repo.name} repository failed: {init.stderr[-500:]}")
    settled()
    run = measure(repo.argv("backup", "-q", str(tree)), timeout=RUN_TIMEOUT, log_dir=work / "logs",
                  env=env, name=f"{repo.name}-backup")
    if not run.ok:
        raise NotMeasured(f"restic backup on the {repo.name} repository failed: {run.failure()}")
    return run


def restore(repo: Repository, tree: Path, work: Path, attempt: int, digest: str) -> Run:
    """One timed restore of the latest snapshot into a fresh folder, checked byte-identical, then removed."""
    target = work / f"restored-{repo.name}"
    shutil.rmtree(target, ignore_errors=True)
    settled()
    run = measure(repo.argv("restore", "latest", "-q", "--target", str(target)), timeout=RUN_TIMEOUT,
                  log_dir=work / "logs", env=restic_env(repo.folder), name=f"{repo.name}-restore-{attempt}")
    if not run.ok:
        raise NotMeasured(f"restic restore on the {repo.name} repository failed: {run.failure()}")
    if tree_digest(target / tree.relative_to("/")) != digest:
        raise NotMeasured(f"the restore from the {repo.name} repository differs from the tree")
    shutil.rmtree(target)
    return run


def server_repository(server: LiveServer, work: Path) -> str:
    """Enroll a PC with the real CLI and get its append credential; the restic location (rest:URL)."""
    from agent.client import HelplineClient
    from agent.store import AgentStore
    from protocol.snapshots import CredentialRequest

    admin, laptop = PC(work, "admin"), PC(work, "laptop")
    admin.login(server)
    token = admin.ok("enroll-token", "create", "--json").json()["token"]
    laptop.ok("agent", "enroll", server.url, token)
    store = AgentStore(laptop.agent_dir)
    state = store.require()
    with HelplineClient.connect(state.server_url, agent=store.signer(state)) as client:
        return "rest:" + client.snapshot_credential(CredentialRequest(purpose="backup")).url


def throughput(size: int, seconds: float) -> float:
    return size / MiB / seconds


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda run: run.wall_s)[len(runs) // 2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000, help="files in the tree (default 20000)")
    parser.add_argument("--mib", type=float, default=1024, help="MiB in the tree (default 1024)")
    parser.add_argument("--runs", type=int, default=3,
                        help="restores of each repository, taken in turn local/REST; the median counts (default 3)")
    parser.add_argument("--seed", type=int, default=2026, help="the tree's random seed (default 2026)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--work-dir", type=Path, help="where to make the scratch directory (default: the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, repositories)")
    args = parser.parse_args(argv)
    if args.files < 1 or args.mib <= 0 or args.runs < 1:
        parser.error("--files, --mib and --runs must be above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("restic") is None:
        print("NOT MEASURED: restic is not installed", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="helpline-restic-rest-", dir=args.work_dir))
    version = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    server = LiveServer(data_dir=work / "server", env={"HELPLINE_LOG_LEVEL": "warning"})
    sampler = None
    try:
        size = generate_tree(work / "tree", args.files, int(args.mib * MiB), args.seed)
        digest = tree_digest(work / "tree")
        local_repo = Repository("local", work / "local", str(work / "local-repo"))
        backups = {"local": backup(local_repo, work / "tree", work)}
        server.init()
        server.start()
        rest_repo = Repository("rest", work / "rest", server_repository(server, work))
        idle = TreeSampler(server.process.pid, same_address_space=kcmp_same_address_space()).sample()
        sampler = TreeSampler(server.process.pid, interval=SERVER_SAMPLE_INTERVAL,
                              same_address_space=kcmp_same_address_space())
        sampler.start()
        backups["rest"] = backup(rest_repo, work / "tree", work)
        # Restores in turn, so a slow spell of a noisy machine falls on both repositories alike.
        restores: dict[str, list[Run]] = {"local": [], "rest": []}
        for attempt in range(1, args.runs + 1):
            for repo in (local_repo, rest_repo):
                restores[repo.name].append(restore(repo, work / "tree", work, attempt, digest))
        sampler.stop()
    except NotMeasured as exc:
        print(f"NOT MEASURED: {exc}", file=sys.stderr)
        return 1
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"restic REST repository vs local on {platform.node()} ({os.cpu_count()} CPUs, {version}, "
          f"load average at start {load}); tree: {args.files} files, {size / MiB:.0f} MiB, seed {args.seed}")
    print(f"restores: {args.runs} of each repository, taken in turn; the median counts; "
          "every timed step starts after a sync")
    print(f"{'repository':<12}{'step':<9}{'wall s':>9}{'MiB/s':>9}{'restic peak MB':>16}  every run (s)")
    figures: dict = {"files": args.files, "bytes": size, "seed": args.seed, "restic": version, "load": load,
                     "runs": args.runs}
    medians: dict[tuple[str, str], float] = {}
    for name in ("local", "rest"):
        for step, runs in (("backup", [backups[name]]), ("restore", restores[name])):
            middle = median_run(runs)
            medians[name, step] = middle.wall_s
            every = " ".join(f"{run.wall_s:.2f}" for run in runs)
            print(f"{name:<12}{step:<9}{middle.wall_s:>9.2f}{throughput(size, middle.wall_s):>9.1f}"
                  f"{max(run.peak_rss_bytes for run in runs) / MB:>16.0f}  {every}")
            figures[f"{name}_{step}_s"] = middle.wall_s
            figures[f"{name}_{step}_runs_s"] = [run.wall_s for run in runs]
    print(f"server memory: {idle / MB:.0f} MB idle, {sampler.peak_rss / MB:.0f} MB peak during the REST runs "
          f"({sampler.samples} samples every {SERVER_SAMPLE_INTERVAL * 1000:.0f} ms, {sampler.cpu_s:.2f} s of CPU)")
    figures |= {"server_idle_bytes": idle, "server_peak_bytes": sampler.peak_rss, "sampler_cpu_s": sampler.cpu_s}
    for step in ("backup", "restore"):
        share = medians["local", step] / medians["rest", step]
        figures[f"{step}_ratio"] = share
        print(f"{step} throughput REST/local = {share:.2f} (target >= {TARGET:.2f}): {'PASS' if share >= TARGET else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
