"""Questions at a real terminal (a pty): answers come through, and a Ctrl-C always stops the question."""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path

import pexpect
import pytest

from cli import answers

ROOT = Path(__file__).resolve().parents[2]

# The person's question runs on the main thread. A Ctrl-C that the interpreter has marked while the
# main thread was not yet waiting on the terminal (here: one the kernel handed to a helper thread,
# since the main thread blocks it) interrupts no read; the question must stop anyway.
PROGRAM = textwrap.dedent("""
    import signal, sys, threading, time
    from cli import answers

    how = sys.argv[1]
    if how == "elsewhere":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        listening = threading.Event()

        def helper():
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            listening.set()
            time.sleep(30)

        threading.Thread(target=helper, daemon=True).start()
        listening.wait(10)
    try:
        if how == "hidden":
            answer = answers.ask_hidden("Secret? ")
        else:
            answer = answers.ask("Name? ")
    except KeyboardInterrupt:
        print("<interrupted>", flush=True)
    except EOFError:
        print("<end of input>", flush=True)
    else:
        print(f"<answer {answer!r}>", flush=True)
""")


def _spawn(how: str) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-c", PROGRAM, how], cwd=str(ROOT), encoding="utf-8", timeout=15)


def _end(child: pexpect.spawn) -> None:
    child.expect(pexpect.EOF)
    child.close()


def test_an_answer_comes_back_without_its_line_end():
    child = _spawn("plain")
    child.expect_exact("Name? ")
    child.send("Ada Lovelace – ünïcode\r")
    child.expect_exact("<answer 'Ada Lovelace – ünïcode'>")
    _end(child)


def test_the_terminal_s_line_editing_still_works():
    child = _spawn("plain")
    child.expect_exact("Name? ")
    child.send("Adx\x7fa\r")  # a typo, erased with Backspace (the kernel edits the line)
    child.expect_exact("<answer 'Ada'>")
    _end(child)


def test_ctrl_d_on_an_empty_line_ends_the_input():
    child = _spawn("plain")
    child.expect_exact("Name? ")
    child.sendeof()
    child.expect_exact("<end of input>")
    _end(child)


def test_ctrl_c_at_the_question_stops_it():
    child = _spawn("plain")
    child.expect_exact("Name? ")
    child.sendintr()
    child.expect_exact("<interrupted>")
    _end(child)


def test_a_ctrl_c_marked_while_the_question_was_not_reading_still_stops_it():
    child = _spawn("elsewhere")
    child.expect_exact("Name? ")
    child.kill(signal.SIGINT)  # to the process: the helper thread takes it, the main thread's read goes on
    child.expect_exact("<interrupted>", timeout=10)
    _end(child)


def test_a_hidden_answer_is_not_shown_and_the_echo_comes_back():
    child = _spawn("hidden")
    child.expect_exact("Secret? ")
    child.send("hunter2-not-shown\r")
    child.expect_exact("<answer 'hunter2-not-shown'>")
    assert "hunter2-not-shown" not in child.before
    _end(child)


def test_without_a_terminal_the_plain_input_is_used(monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("typed ahead\n"))
    assert answers.ask("") == "typed ahead"


@pytest.mark.parametrize("name", ["visible_prompt_func", "hidden_prompt_func"])
def test_the_cli_s_prompts_read_through_it(monkeypatch, name):
    from typer._click import termui

    monkeypatch.setattr(termui, name, None)
    answers.install()
    assert getattr(termui, name) in (answers.ask, answers.ask_hidden)
