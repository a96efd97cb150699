"""The detectors read a line as a person would (no colours, composed letters, JSON's escaped letters) and
never lose what they find in the line as it came."""

from __future__ import annotations

import random
import string

import pytest

from agent.redaction import Redactor

ALNUM = string.ascii_letters + string.digits


def _github_token(rng: random.Random) -> str:
    return "ghp_" + "".join(rng.choice(ALNUM) for _ in range(36))


@pytest.mark.parametrize("final", list("@ABCDEFGHJKLMPSTfghlmnsu"))
def test_a_control_sequence_before_a_token_never_hides_it(final, tmp_path):
    rng = random.Random(final)
    secret = _github_token(rng)
    # The escape's last byte may be the token's first letter, or stand right before it.
    for text in (f"x \x1b[{secret} y", f"x \x1b[2{final}{secret} y", f"\x1b[1mpassword:\x1b[0m Xk3#9fAbq2 \x1b[{secret}"):
        out, counts = Redactor().redact_text(text + "\n")
        assert secret[5:] not in out, out
        assert counts
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / "t.log").write_text(text + "\n", encoding="utf-8")
        redactor = Redactor()
        redactor.redact_tree(tmp_path / "in", tmp_path / "out")
        assert redactor.verify_tree(tmp_path / "out") == []
        assert redactor.verify_tree(tmp_path / "in") != []


def test_coloured_secrets_go_with_their_colours_and_clean_coloured_lines_stay():
    rng = random.Random(3)
    secret = _github_token(rng)
    assert Redactor().redact_text(f"\x1b[32m{secret}\x1b[0m\n") == ("[REDACTED:github-token]\n", {"github-token": 1})
    out, _ = Redactor().redact_text("\x1b[1mDB password:\x1b[0m Xk3#9fAbq2\n")
    assert "Xk3#9fAbq2" not in out and "\x1b" not in out
    for clean in ("\x1b[31merror\x1b[0m password expired\n", "\x1b[1mpassword:\x1b[0m required\n"):
        assert Redactor().redact_text(clean) == (clean, {})


def test_escaped_letters_are_read_as_letters_and_written_back_escaped():
    line = '{"msg": "\\u043f\\u0430\\u0440\\u043e\\u043b\\u044c \\u043e\\u0442 wifi: WLXH@D1PfkB"}\n'
    out, counts = Redactor().redact_text(line)
    assert out == line.replace("WLXH@D1PfkB", "[REDACTED:password]")
    assert counts == {"password": 1}
    assert Redactor().redact_text(out) == (out, {})
    clean = '{"msg": "caf\\u00e9 \\u043e\\u0442 \\u263a ok"}\n'
    assert Redactor().redact_text(clean) == (clean, {})


def test_decomposed_letters_are_read_composed():
    out, counts = Redactor().redact_text("contrasen\u0303a: z4CvG44zw4 - pls change\n")
    assert "z4CvG44zw4" not in out and counts == {"password": 1}
    clean = "sesio\u0301n iniciada por Jose\u0301\n"
    assert Redactor().redact_text(clean) == (clean, {})
