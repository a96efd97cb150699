"""The agent's cache of compiled regular expressions (agent/regexes.py): faster starts, never another match."""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent import regexes
from agent.regexes import MAGIC, RegexCache, interpreter_key

ROOT = Path(__file__).resolve().parents[2]

PATTERNS = [
    (r"(?P<key>pass(?:word)?)\s*[:=]\s*(?P<value>\S+)", 0),
    (r"(?i)bearer\s+([A-Za-z0-9._~+/-]+=*)", 0),
    (r"^\s*#.*$", re.M),
    (r"пароль|密码|contraseña", re.I),
    (rb"\x00+(?P<tail>[^\x00]{4,})", 0),
    (r"(a)(b)?(?(2)c|d)", 0),
]


def _write_cache(path: Path, key, entries) -> None:
    payload = marshal.dumps((key, entries))
    path.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)
    path.chmod(0o644)


def _filled(path: Path) -> dict:
    cache = RegexCache(path, write=True)
    for pattern, flags in PATTERNS:
        cache.compile(pattern, flags)
    assert cache.save()
    return dict(cache._entries)


def test_a_saved_cache_gives_the_patterns_re_compile_gives(tmp_path):
    path = tmp_path / "cache.bin"
    _filled(path)
    again = RegexCache(path, write=False)
    for pattern, flags in PATTERNS:
        compiled = again.compile(pattern, flags)
        assert compiled == re.compile(pattern, flags)  # equal patterns: the same flags and the same engine code
        assert compiled.groupindex == re.compile(pattern, flags).groupindex
        assert compiled.groups == re.compile(pattern, flags).groups
    assert (again.hits, again.misses) == (len(PATTERNS), 0)
    found = again.compile(PATTERNS[0][0]).search("user=bob password = s3cr3t!")
    assert found.group("key", "value") == ("password", "s3cr3t!")
    assert again.compile(r"(a)(b)?(?(2)c|d)").fullmatch("abc") and not again.compile(r"(a)(b)?(?(2)c|d)").fullmatch("abd")


def test_flags_given_as_enum_or_int_are_one_entry_and_debug_is_never_cached(tmp_path, capsys):
    cache = RegexCache(tmp_path / "c.bin", write=True)
    first = cache.compile("x+", re.I | re.M)
    assert cache.compile("x+", int(re.I | re.M)) is first  # compiled once in a process, as re.compile does
    assert (cache.hits, cache.misses) == (0, 1)
    cache.compile("y+", re.DEBUG)
    assert ("y+", int(re.DEBUG)) not in cache._entries
    capsys.readouterr()


def test_a_bad_pattern_raises_re_error_and_is_not_recorded(tmp_path):
    cache = RegexCache(tmp_path / "c.bin", write=True)
    with pytest.raises(re.error):
        cache.compile(r"(unclosed")
    with pytest.raises(TypeError):
        cache.compile(42)
    assert not cache._entries and not cache.save()
    assert not (tmp_path / "c.bin").exists()


def _damaged(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # truncated
    _damaged,  # a flipped byte: the digest no longer matches
    lambda p: p.write_bytes(b"XXXX" + p.read_bytes()[4:]),  # not this format
    lambda p: p.write_bytes(b""),
    lambda p: _write_cache(p, ("another", "interpreter"), marshal.loads(p.read_bytes()[36:])[1]),
    lambda p: _write_cache(p, interpreter_key(), ["not", "a", "dict"]),
])
def test_a_damaged_or_foreign_file_is_ignored_and_replaced(tmp_path, damage):
    path = tmp_path / "cache.bin"
    _filled(path)
    damage(path)
    cache = RegexCache(path, write=True)
    for pattern, flags in PATTERNS:
        assert cache.compile(pattern, flags) == re.compile(pattern, flags)
    assert cache.hits == 0 and cache.misses == len(PATTERNS)
    assert cache.save()
    repaired = RegexCache(path, write=False)
    for pattern, flags in PATTERNS:
        repaired.compile(pattern, flags)
    assert repaired.hits == len(PATTERNS)


def test_code_the_engine_rejects_falls_back_to_re_compile(tmp_path):
    path = tmp_path / "cache.bin"
    entries = _filled(path)
    pattern, flags = PATTERNS[0]
    final_flags, code, groups, groupindex, indexgroup = entries[(pattern, flags)]
    entries[(pattern, flags)] = (final_flags, [0xFFFF] * len(code), groups, groupindex, indexgroup)
    other, other_flags = PATTERNS[1]
    entries[(other, other_flags)] = ("not", "an", "entry")
    _write_cache(path, interpreter_key(), entries)
    cache = RegexCache(path, write=False)
    assert cache.compile(pattern, flags) == re.compile(pattern, flags)
    assert cache.compile(other, other_flags) == re.compile(other, other_flags)
    assert cache.misses == 2


@pytest.mark.skipif(os.name == "nt" or not hasattr(os, "getuid"), reason="POSIX file modes")
def test_a_file_others_could_have_written_is_not_read(tmp_path):
    path = tmp_path / "cache.bin"
    _filled(path)
    for mode in (0o664, 0o646, 0o666):
        path.chmod(mode)
        cache = RegexCache(path, write=False)
        cache.compile(*PATTERNS[0])
        assert cache.hits == 0, oct(mode)
    path.chmod(0o644)
    if os.getuid() == 0:  # a file of another user (not root): ignored too
        os.chown(path, 54321, 54321)
        cache = RegexCache(path, write=False)
        cache.compile(*PATTERNS[0])
        assert cache.hits == 0


def test_nothing_is_written_where_bytecode_may_not_be_or_the_folder_cannot_be(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    cache = RegexCache(tmp_path / "c.bin")
    cache.compile("a+b")
    assert not cache.save() and not (tmp_path / "c.bin").exists()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    blocked = tmp_path / "file"
    blocked.write_text("")
    cache = RegexCache(blocked / "sub" / "c.bin", write=True)  # its folder cannot be made: a file is in the way
    assert cache.compile("a+b") == re.compile("a+b")
    assert cache.save() is False


def test_the_cap_bounds_the_file_and_a_full_cache_keeps_what_is_in_use(tmp_path, monkeypatch):
    monkeypatch.setattr(regexes, "MAX_ENTRIES", 3)
    path = tmp_path / "c.bin"
    cache = RegexCache(path, write=True)
    for n in range(10):
        cache.compile(f"x{{{n}}}")
    assert len(cache) == 3
    assert cache.save()
    # The next run (changed code) uses one old pattern and three new ones: the unused old ones make room.
    later = RegexCache(path, write=True)
    for pattern in ("x{0}", "new1", "new2", "new3"):
        later.compile(pattern)
    assert later.hits == 1 and len(later) == 3 and later.save()
    last = RegexCache(path, write=False)
    for pattern in ("x{0}", "new1", "new2"):
        last.compile(pattern)
    assert last.hits == 3


_RECORD = """
import json, sys
from pathlib import Path
import agent.regexes as r
r.AGENT_CACHE.path = Path(sys.argv[1])
r.AGENT_CACHE._write = sys.argv[2] == "write"
import agent.redaction, agent.redaction.verify, agent.diagnostics.collectors, agent.bundle
print(json.dumps({"hits": r.AGENT_CACHE.hits, "misses": r.AGENT_CACHE.misses,
                  "keys": sorted(repr(k) for k in r.AGENT_CACHE._entries)}))
"""


def _record(path: Path, mode: str, seed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _RECORD, str(path), mode], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120, check=True)
    return json.loads(done.stdout)


def test_the_agent_compiles_the_same_patterns_on_every_run_and_a_warm_start_compiles_none(tmp_path):
    path = tmp_path / "agent.bin"
    first = _record(path, "write", "1")
    assert first["hits"] == 0 and first["misses"] == len(first["keys"]) >= 150  # redaction and the collectors, saved at import
    assert path.exists()
    # Another hash seed: a pattern built from a set in iteration order would miss here, on every run.
    warm = _record(path, "read", "2")
    assert warm["misses"] == 0 and warm["hits"] == first["misses"]
    assert warm["keys"] == first["keys"]
    entries = marshal.loads(path.read_bytes()[len(MAGIC) + 32:])[1]
    import _sre

    for (pattern, flags), entry in entries.items():
        assert _sre.compile(pattern, *entry) == re.compile(pattern, flags), pattern[:80]


def test_warming_from_the_command_line_fills_the_agent_cache(tmp_path):
    code = ("import sys, runpy; from pathlib import Path; import agent.regexes as r; "
            "r.AGENT_CACHE.path = Path(sys.argv[1]); runpy.run_module('agent.regexes', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w.bin")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                          timeout=120, check=True)
    assert "patterns cached in" in done.stdout and (tmp_path / "w.bin").stat().st_mode & 0o777 == 0o644


_NAMES = """
import sys
from pathlib import Path
import agent.regexes as r
r.AGENT_CACHE.path = Path(sys.argv[1])
r.AGENT_CACHE._write = True
from agent.redaction import Redactor, RedactionOptions
options = RedactionOptions(network=True, hostnames=True, usernames=True, known_hostnames=("zqxhost17.corp.example",),
                           known_usernames=("zqxuser42",), keep_hosts=("zqxkeep.example",))
redactor = Redactor(options)
text, counts = redactor.redact_text("zqxuser42 logged in on zqxhost17.corp.example from /home/zqxuser42; password=hunter2x9\\n")
assert "zqxuser42" not in text and "zqxhost17" not in text, text
problems = redactor.flags("zqxuser42 on zqxhost17.corp.example")
r.AGENT_CACHE.save()
"""


def test_this_pcs_names_never_reach_the_cache(tmp_path):
    """Patterns made from the PC's user and host names are compiled outside the cache: it is not a list of them."""
    path = tmp_path / "agent.bin"
    subprocess.run([sys.executable, "-c", _NAMES, str(path)], env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                   timeout=120, check=True, capture_output=True)
    data = path.read_bytes()
    assert len(data) > 10_000  # the agent's own patterns were saved
    for name in (b"zqxuser42", b"zqxhost17", b"zqxkeep", b"hunter2x9"):
        assert name not in data


def test_warming_says_so_when_the_cache_cannot_be_written(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    code = ("import sys, runpy; from pathlib import Path; import agent.regexes as r; "
            "r.AGENT_CACHE.path = Path(sys.argv[1]); runpy.run_module('agent.regexes', run_name='__main__')")
    # (-W: runpy warns that the module it runs was imported first, which the test does to point it elsewhere)
    done = subprocess.run([sys.executable, "-W", "ignore::RuntimeWarning", "-c", code, str(blocked / "sub" / "w.bin")],
                          capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=120)
    assert done.returncode == 1 and "could not be written" in done.stderr and done.stderr.count("\n") == 1


def test_an_engine_that_takes_other_arguments_leaves_plain_compiling(tmp_path, monkeypatch):
    """A later interpreter whose engine is called differently: patterns still compile, nothing is recorded."""

    class OtherEngine:
        MAGIC = getattr(regexes._sre, "MAGIC", None)
        CODESIZE = getattr(regexes._sre, "CODESIZE", None)

        @staticmethod
        def compile(*args):
            raise TypeError("compile() takes 7 arguments")

    monkeypatch.setattr(regexes, "_sre", OtherEngine)
    cache = RegexCache(tmp_path / "c.bin", write=True)
    for pattern, flags in PATTERNS:
        assert cache.compile(pattern, flags) == re.compile(pattern, flags)
    assert not cache._entries and not cache.save()
