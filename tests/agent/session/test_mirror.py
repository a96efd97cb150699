"""The user's live view: what reaches their terminal, which keys are theirs, what the banner says."""

from __future__ import annotations

import os
import threading

import pytest

from agent.session.mirror import CHAT_KEY, END_KEY, SCOPE_KEY, Mirror, OutputFilter
from protocol.grants import Scope

pytestmark = pytest.mark.skipif(os.name == "nt", reason="sessions run on POSIX PCs")


class FakeHost:
    def __init__(self, scopes):
        self.scopes = frozenset(scopes)
        self.typed = b""

    def user_input(self, data: bytes) -> None:
        self.typed += data


class FakeLive:
    def __init__(self, scopes=(Scope.VIEW, Scope.CONTROL, Scope.FILES)):
        self.host = FakeHost(scopes)
        self.ended_with: str | None = None
        self.chats: list[str] = []

    @property
    def ended(self) -> bool:
        return self.ended_with is not None

    def end(self, reason: str) -> None:
        self.ended_with = self.ended_with or reason

    def send_chat(self, text: str) -> None:
        self.chats.append(text)

    def take_back(self, scope):
        self.host.scopes = self.host.scopes - {scope}
        return self.host.scopes

    def seconds_left(self) -> float:
        return 3540.0


@pytest.fixture
def screen():
    """A pipe standing in for the user's terminal: the mirror writes, the test reads."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    yield lambda: _drain(read_end), write_end
    os.close(read_end)
    os.close(write_end)


def _drain(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


@pytest.mark.parametrize("sequence", [
    b"\x1b[6n", b"\x1b[5n", b"\x1b[c", b"\x1b[>c", b"\x1b[=c", b"\x1b[21t", b"\x1b[14t", b"\x1b[?25$p", b"\x1b[>0q",
    b"\x1b]2;you have been hacked\x07", b"\x1b]0;title\x1b\\", b"\x1b]52;c;ZWNobyBoaQ==\x07", b"\x1b]11;?\x07",
    b"\x1bP$qm\x1b\\", b"\x1bP+q544e\x1b\\", b"\x1bZ", b"\x05",
], ids=["dsr-cursor", "dsr-status", "da1", "da2", "da3", "title-report", "size-report", "decrqm", "xtversion",
        "osc-title-bel", "osc-title-st", "osc-clipboard", "osc-colour-query", "decrqss", "xtgettcap", "decid", "enq"])
def test_what_would_make_the_users_terminal_answer_or_act_off_screen_is_dropped(sequence):
    assert OutputFilter().feed(b"before" + sequence + b"after") == b"beforeafter"


def test_colours_cursor_moves_and_text_pass_unchanged():
    data = b"\x1b[1;31mred\x1b[0m \x1b[10;5H\x1b[2J\x1b[?1049h caf\xc3\xa9\r\n\x1b[K"
    assert OutputFilter().feed(data) == data


def test_a_sequence_split_across_chunks_is_still_dropped():
    f = OutputFilter()
    parts = [b"one \x1b", b"]52;c;ZWNo", b"bw==\x07 two \x1b[", b"6", b"n three \x1bP$q", b"m\x1b", b"\\ four"]
    assert b"".join(f.feed(p) for p in parts) == b"one  two  three  four"


def test_keys_go_to_the_shell_except_the_sessions_own(screen):
    _, out = screen
    live = FakeLive()
    mirror = Mirror(live, engineer="Ana Silva", stdin_fd=0, stdout_fd=out, banner=False)
    mirror.keys(b"ls -l\r")
    assert live.host.typed == b"ls -l\r" and not live.ended
    mirror.keys(b"abc" + END_KEY + b"rm -rf ~\r")
    assert live.host.typed == b"ls -l\rabc"  # nothing after the end key reaches the shell
    assert live.ended_with == "the user ended the session"


def test_the_chat_line_sends_a_message_without_typing_into_the_shell(screen):
    _, out = screen
    live = FakeLive()
    mirror = Mirror(live, engineer="Ana Silva", stdin_fd=0, stdout_fd=out, banner=False)
    mirror.keys(CHAT_KEY + b"the printer is on flor 2\x7f\x7f\x7f\x7foor 2\r" + b"pwd\r")
    assert live.chats == ["the printer is on floor 2"]
    assert live.host.typed == b"pwd\r"
    mirror.keys(CHAT_KEY + b"never mind\x1b" + b"x")  # Esc cancels; the next key goes to the shell again
    assert live.chats == ["the printer is on floor 2"] and live.host.typed == b"pwd\rx"
    mirror.keys(CHAT_KEY + b"half typed" + END_KEY)  # the end key ends even from the chat line
    assert live.ended_with == "the user ended the session"


def test_the_menu_takes_a_permission_back(screen):
    read, out = screen
    live = FakeLive()
    mirror = Mirror(live, engineer="Ana Silva", stdin_fd=0, stdout_fd=out, banner=False)
    mirror.keys(SCOPE_KEY)
    assert "[c] control" in mirror.banner_text() and "[f] files" in mirror.banner_text()
    assert "[p] forward" not in mirror.banner_text()  # not granted, not offered
    mirror.keys(b"c" + b"whoami\r")
    assert live.host.scopes == {Scope.VIEW, Scope.FILES}
    assert live.host.typed == b"whoami\r"
    assert b"You took back 'control'. The engineer keeps: view+files." in read()
    mirror.keys(SCOPE_KEY + b"x")  # any other key cancels, takes nothing
    assert live.host.scopes == {Scope.VIEW, Scope.FILES}


def test_the_banner_names_who_what_and_the_time_left_and_shows_messages(screen):
    read, out = screen
    live = FakeLive()
    mirror = Mirror(live, engineer="Ana \x1b[31mSilva", stdin_fd=0, stdout_fd=out, banner=True)
    text = mirror.banner_text()
    assert "Ana \\x1b[31mSilva" in text  # a name from the server is shown inert
    assert "view+control+files" in text and "59 min left" in text and "Ctrl-] end now" in text
    mirror.message("Ana", "restarting \x1b[2Jthe spooler")
    assert "Ana: restarting \\x1b[2Jthe spooler" in mirror.banner_text()
    drawn = read()
    assert b"\x07" in drawn and b"\x1b[1;1H" in drawn and b"\x1b[2J" not in drawn


def test_a_region_reset_by_the_shell_gets_the_banner_region_back(screen):
    read, out = screen
    mirror = Mirror(FakeLive(), engineer="Ana", stdin_fd=0, stdout_fd=out, banner=True)
    mirror._rows = 40
    mirror.output(b"\x1b[r")
    assert read().endswith(mirror._banner_bytes()) and b"\x1b7\x1b[2;40r\x1b8" in mirror._region()


def test_the_loop_ends_on_the_end_key_and_when_input_ends(screen):
    _, out = screen
    keys_r, keys_w = os.pipe()
    live = FakeLive()
    mirror = Mirror(live, engineer="Ana", stdin_fd=keys_r, stdout_fd=out, banner=False)
    runner = threading.Thread(target=mirror.run)
    runner.start()
    os.write(keys_w, b"echo hi\r" + END_KEY)
    runner.join(5)
    assert not runner.is_alive() and live.ended_with == "the user ended the session"
    assert live.host.typed == b"echo hi\r"
    live2 = FakeLive()
    mirror2 = Mirror(live2, engineer="Ana", stdin_fd=keys_r, stdout_fd=out, banner=False)
    os.close(keys_w)
    runner = threading.Thread(target=mirror2.run)
    runner.start()
    runner.join(5)
    assert not runner.is_alive() and live2.ended_with == "the terminal was closed"
    os.close(keys_r)


def test_the_engineer_joining_shows_who_and_the_verification_string(screen):
    read, out = screen
    mirror = Mirror(FakeLive(), engineer="Ana Silva", account="ana", stdin_fd=0, stdout_fd=out, banner=True)
    mirror.connected("482 019 736", "whatever-ssh-user")
    drawn = read()
    assert b"Ana Silva (account ana) is connected" in drawn and b"Verification: 482 019 736" in drawn
    assert "connected" in mirror.banner_text() and "waiting" not in mirror.banner_text()
