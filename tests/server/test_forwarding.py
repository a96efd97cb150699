"""The client's address: X-Forwarded-For only from configured trusted proxies (none by default), read from the right."""

from __future__ import annotations

import pytest

from protocol.errors import ConfigError
from server.forwarding import client_address, parse_networks
from server.settings import ServerSettings, load_settings
from tests.server.conftest import CLIENT_IP, PASSWORD

PROXIES = parse_networks(("10.0.0.0/8", "::1", "127.0.0.1"))


@pytest.mark.parametrize(("peer", "header", "expected"), [
    ("10.0.0.5", ["203.0.113.9"], "203.0.113.9"),
    ("10.0.0.5", ["198.51.100.1, 203.0.113.9"], "203.0.113.9"),  # the client's own entries are on the left
    ("10.0.0.5", ["198.51.100.1, 203.0.113.9, 10.0.0.6"], "203.0.113.9"),  # a chain of trusted proxies
    ("10.0.0.5", ["198.51.100.1", "203.0.113.9"], "203.0.113.9"),  # repeated headers read in order
    ("10.0.0.5", ["not-an-address, 10.0.0.7"], "10.0.0.7"),  # a broken hop: the last trusted proxy
    ("10.0.0.5", ["[2001:db8::7]:4711"], "2001:db8::7"),
    ("10.0.0.5", ["203.0.113.9:5000"], "203.0.113.9"),
    ("10.0.0.5", [], "10.0.0.5"),
    ("::1", ["::ffff:203.0.113.9"], "203.0.113.9"),
    ("203.0.113.50", ["198.51.100.1"], "203.0.113.50"),  # a peer that is no proxy cannot pick its address
])
def test_the_rightmost_untrusted_hop_is_the_client(peer, header, expected):
    assert client_address(peer, header, PROXIES) == expected


def test_no_proxy_is_trusted_by_default_not_even_loopback():
    assert ServerSettings().trusted_proxies == []
    assert client_address("127.0.0.1", ["203.0.113.9"], parse_networks(())) == "127.0.0.1"


def test_settings_take_a_list_from_the_file_or_the_environment_and_name_the_old_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPLINE_TRUSTED_PROXIES", "10.0.0.5, 10.1.0.0/16")
    assert load_settings().trusted_proxies == ["10.0.0.5", "10.1.0.0/16"]
    monkeypatch.setenv("HELPLINE_TRUSTED_PROXIES", "10.0.0.300")
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_settings()
    monkeypatch.delenv("HELPLINE_TRUSTED_PROXIES")
    config = tmp_path / "server.toml"
    config.write_text('forwarded_allow_ips = "127.0.0.1"\n')
    with pytest.raises(ConfigError, match="replaced by trusted_proxies"):
        load_settings(config)


def login_ip(helpline, headers: dict[str, str]) -> str:
    username = helpline.account()
    helpline.ok("POST", "auth/login", json={"username": username, "password": PASSWORD}, headers=headers)
    return next(e.ip for e in reversed(helpline.audit("auth.login")) if e.target_id == username)


def test_by_default_a_client_cannot_choose_the_address_it_is_audited_under(helpline):
    assert login_ip(helpline, {"X-Forwarded-For": "203.0.113.9"}) == CLIENT_IP


class TestBehindATrustedProxy:
    @pytest.fixture
    def server_settings(self, server_settings):
        return server_settings.model_copy(update={"trusted_proxies": ["192.0.2.0/28"]})

    def test_the_forwarded_address_is_used(self, helpline):
        assert login_ip(helpline, {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}) == "203.0.113.9"
        assert login_ip(helpline, {}) == CLIENT_IP
