"""CollectContext: capped copies that keep head and tail, confinement to the staging dir,
forbidden paths, deadline clamping, and options validation."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from agent.diagnostics.context import CollectionClosed, CollectOptions, HeadTailWriter
from agent.diagnostics.model import ItemKind, ItemStatus
from protocol.errors import ConfigError, InvalidInputError


def _numbered_file(path: Path, lines: int) -> Path:
    path.write_text("".join(f"line {n:06d} of the big log, some padding to look like a log line\n"
                            for n in range(lines)))
    return path


def test_copy_of_a_large_file_keeps_first_and_last_lines_and_a_marker(make_ctx, tmp_path: Path):
    ctx = make_ctx(category="logs")
    src = _numbered_file(tmp_path / "big.log", 50_000)  # about 3.3 MB
    cap = 64 * 1024
    item = ctx.copy_file("logs/big.log", src, cap)
    staged = ctx.path("logs/big.log")
    text = staged.read_text()
    lines = text.splitlines()
    assert item.status is ItemStatus.TRUNCATED
    assert item.size == staged.stat().st_size <= cap
    assert lines[0].startswith("line 000000 ")
    assert lines[-1].startswith("line 049999 ")
    assert sum("bytes omitted here" in line for line in lines) == 1
    # Every kept line is whole, and the tail is the larger part (where the latest errors are).
    marker = next(i for i, line in enumerate(lines) if "bytes omitted" in line)
    assert all(line.endswith("log line") for i, line in enumerate(lines) if i != marker)
    assert len(lines) - marker > 2 * marker


def test_small_file_is_copied_whole(make_ctx, tmp_path: Path):
    ctx = make_ctx(category="system")
    src = tmp_path / "os-release"
    src.write_text('NAME="Debian GNU/Linux"\nVERSION_ID="12"\n')
    item = ctx.copy_file("system/os-release.txt", src, 4096)
    assert item.status is ItemStatus.OK and item.kind is ItemKind.FILE
    assert ctx.path("system/os-release.txt").read_bytes() == src.read_bytes()
    assert item.source == str(src)


def test_head_only_copy_when_head_tail_is_off(make_ctx, tmp_path: Path):
    ctx = make_ctx(category="logs")
    src = _numbered_file(tmp_path / "big.log", 10_000)
    item = ctx.copy_file("logs/head.log", src, 8192, head_tail=False)
    data = ctx.path("logs/head.log").read_bytes()
    assert item.status is ItemStatus.TRUNCATED
    assert len(data) == 8192 and data == src.read_bytes()[:8192]


def test_missing_and_unreadable_files(make_ctx, tmp_path: Path, monkeypatch):
    ctx = make_ctx(category="logs")
    assert ctx.copy_file("logs/none.log", tmp_path / "nope.log", 4096).status is ItemStatus.NOT_FOUND
    secret = tmp_path / "locked.log"
    secret.write_text("private\n")
    secret.chmod(0)
    if os.access(secret, os.R_OK):  # root reads anything: make the OS refuse the way it would for a user
        import agent.diagnostics.context as context_module

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(secret))

        monkeypatch.setattr(context_module.os, "open", refuse)
    item = ctx.copy_file("logs/locked.log", secret, 4096)
    assert item.status is ItemStatus.DENIED
    assert not ctx.path("logs/locked.log").exists()


def test_forbidden_paths_are_never_read_even_through_a_symlink(make_ctx, tmp_path: Path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    innocent = tmp_path / "app.log"
    innocent.symlink_to(key)
    ctx = make_ctx(category="logs", home=home, forbidden=("~/.ssh/id_*", "*.pem"))
    for relpath, src in (("logs/key", key), ("logs/app.log", innocent)):
        item = ctx.copy_file(relpath, src, 4096)
        assert item.status is ItemStatus.SKIPPED
        assert "forbidden" in item.note
        assert not ctx.path(relpath).exists()
    pem = tmp_path / "server.pem"
    pem.write_text("key\n")
    assert ctx.copy_file("logs/server.pem", pem, 4096).status is ItemStatus.SKIPPED


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_skipped_without_blocking(make_ctx, tmp_path: Path):
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    ctx = make_ctx(category="logs")
    started = time.monotonic()
    item = ctx.copy_file("logs/pipe.log", fifo, 4096)
    assert item.status is ItemStatus.SKIPPED
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("relpath", ["../escape.txt", "/etc/passwd", "system/../../escape.txt", "system//x",
                                     "system\\x.txt", "C:/x.txt", "network/x.txt", ""])
def test_writes_are_confined_to_the_collectors_folder(make_ctx, relpath: str):
    ctx = make_ctx(category="system")
    with pytest.raises(InvalidInputError):
        ctx.write_text(relpath, "x")


def test_a_symlink_inside_the_staging_dir_cannot_lead_writes_out(make_ctx, tmp_path: Path):
    ctx = make_ctx(category="system")
    outside = tmp_path / "outside"
    outside.mkdir()
    (ctx.out_dir / "system").symlink_to(outside)
    with pytest.raises(InvalidInputError):
        ctx.write_text("system/facts.json", "{}")
    assert not any(outside.iterdir())


def test_a_symlink_deeper_in_the_collector_s_folder_cannot_lead_writes_out(make_ctx, tmp_path: Path):
    ctx = make_ctx(category="system")
    outside = tmp_path / "outside"
    outside.mkdir()
    (ctx.out_dir / "system").mkdir()
    (ctx.out_dir / "system" / "logs").symlink_to(outside)
    with pytest.raises(InvalidInputError):
        ctx.write_text("system/logs/app.log", "x")
    ctx.write_text("system/facts.json", "{}")  # the folder itself is fine
    assert not any(outside.iterdir())


def test_run_is_clamped_to_the_time_left(make_ctx):
    ctx = make_ctx(category="logs", timeout=1.0)
    started = time.monotonic()
    item = ctx.run("logs/slow.txt", (sys.executable, "-c", "import time; time.sleep(30)"), timeout=60)
    assert item.status is ItemStatus.TIMEOUT
    assert time.monotonic() - started < 3


def test_run_with_no_time_left_is_skipped_without_starting(make_ctx):
    ctx = make_ctx(category="logs", timeout=0.01)
    time.sleep(0.05)
    item = ctx.run("logs/late.txt", (sys.executable, "-c", "print(1)"))
    assert item.status is ItemStatus.SKIPPED
    assert not ctx.path("logs/late.txt").exists()


def test_ok_codes_turn_a_documented_exit_status_into_ok(make_ctx):
    ctx = make_ctx(category="crashes")
    argv = (sys.executable, "-c", "print('[]'); raise SystemExit(1)")
    assert ctx.run("crashes/a.json", argv).status is ItemStatus.ERROR
    item = ctx.run("crashes/b.json", argv, ok_codes=(0, 1))
    assert item.status is ItemStatus.OK and item.exit_code == 1


def test_a_closed_context_refuses_new_items(make_ctx):
    ctx = make_ctx(category="system")
    ctx.write_text("system/a.txt", "a")
    assert [item.path for item in ctx.close()] == ["system/a.txt"]
    with pytest.raises(CollectionClosed):
        ctx.write_text("system/b.txt", "b")
    assert not ctx.path("system/b.txt").exists()


def test_write_lines_keeps_head_and_tail_of_an_endless_stream(make_ctx):
    ctx = make_ctx(category="logs")
    lines = (f"event {n:07d}" for n in range(200_000))
    item = ctx.write_lines("logs/stream.txt", lines, source="test", max_bytes=16 * 1024)
    text = ctx.path("logs/stream.txt").read_text().splitlines()
    assert item.status is ItemStatus.TRUNCATED
    assert item.size <= 16 * 1024
    assert text[0] == "event 0000000" and text[-1] == "event 0199999"
    assert any("bytes omitted" in line for line in text)


def test_head_tail_writer_without_overflow_writes_everything_in_order(tmp_path: Path):
    writer = HeadTailWriter(tmp_path / "w.txt", 64 * 1024)
    for n in range(100):
        writer.add(f"line {n}")
    written, note = writer.close()
    assert note is None
    assert (tmp_path / "w.txt").read_text().splitlines() == [f"line {n}" for n in range(100)]
    assert written == (tmp_path / "w.txt").stat().st_size


def test_write_json_rejects_what_json_cannot_carry(make_ctx):
    ctx = make_ctx(category="system")
    with pytest.raises(TypeError):
        ctx.write_json("system/bad.json", {"x": object()})


def test_options_from_config_names_the_bad_field():
    with pytest.raises(ConfigError, match="deadline"):
        CollectOptions.from_config({"deadline": -1})
    with pytest.raises(ConfigError, match="app_versions"):
        CollectOptions.from_config({"app_versions": {"git": []}})
    options = CollectOptions.from_config({"log_globs": ["~/app/*.log"], "exclude": ["processes"]})
    assert options.exclude == {"processes"} and options.log_max_bytes == 2 * 1024 * 1024
    assert "HTTPS_PROXY" in options.env_allowlist and "https_proxy" in options.env_allowlist


@pytest.mark.parametrize(("config", "named"), [
    ({"deadline": 0}, "deadline: must be greater than 0"),
    ({"deadline": "20"}, "deadline: must be a number"),
    ({"collector_timeout": float("nan")}, "collector_timeout: must be a number"),
    ({"log_since_hours": float("inf")}, "log_since_hours: must be a number"),
    ({"log_since_hours": 24 * 90 + 1}, "log_since_hours: must be at most 2160"),
    ({"log_max_bytes": 1024}, "log_max_bytes: must be at least 4096"),
    ({"command_max_bytes": 8192.5}, "command_max_bytes: must be a whole number"),
    ({"command_max_bytes": True}, "command_max_bytes: must be a whole number"),
    ({"log_globs": "~/app/*.log"}, "log_globs: must be a list of text"),
    ({"reachability_hosts": ["mail.example.com:443", 25]}, "reachability_hosts: must be a list of text"),
    ({"app_versions": ["git"]}, "app_versions: must be a table"),
    ({"app_versions": {"git": [""]}}, "app_versions.git: needs a command"),
    ({"server_url": 443}, "server_url: must be text"),
    ({"deadlines": 20}, "deadlines: is not a diagnostics setting"),
])
def test_every_bad_setting_is_one_line_naming_it(config, named):
    with pytest.raises(ConfigError) as raised:
        CollectOptions.from_config(config)
    assert named in raised.value.message and "\n" not in raised.value.message


def test_settings_take_the_types_people_write():
    options = CollectOptions.from_config({"deadline": 30, "log_max_bytes": 8192.0, "exclude": ("logs",),
                                          "categories": ["system", "system"], "app_versions": {"git": ("git", "--version")}})
    assert options.deadline == 30.0 and isinstance(options.deadline, float)
    assert options.log_max_bytes == 8192 and isinstance(options.log_max_bytes, int)
    assert options.exclude == {"logs"} and options.categories == {"system"}
    assert options.app_versions == {"git": ["git", "--version"]}
    assert CollectOptions(categories={"system"}).categories == {"system"}
