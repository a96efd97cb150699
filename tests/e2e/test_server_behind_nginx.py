"""The shipped nginx site (deploy/server/nginx-helpline.conf) in front of a live server: TLS from a CA the
CLI is told to trust (HELPLINE_CA_BUNDLE), a whole ticket journey with an attachment through it, the client's
address taken from X-Forwarded-For only as the trusted proxy wrote it, and a remote session whose two sides
meet on the WebSocket relay through nginx."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

from protocol.errors import ExitStatus
from tests.support.live import PC
from tests.support.nginx import Nginx, nginx_bin
from tests.support.sessions import EngineerRun, UserTerminal, make_desk
from tests.support.tls import make_certificates

pytestmark = pytest.mark.e2e

PROXY_ADDRESS = "127.0.0.2"


@pytest.fixture
def proxied(server_factory, tmp_path):
    if not nginx_bin():
        pytest.skip("nginx is not installed (tests/run.sh installs nginx-light)")
    # nginx reaches the server from 127.0.0.2, the clients come from 127.0.0.1: proxy and client differ, as in
    # production, and only the proxy is trusted with X-Forwarded-For.
    server = server_factory(trusted_proxies=PROXY_ADDRESS)
    certs = make_certificates(tmp_path / "tls")
    proxy = Nginx(tmp_path / "nginx", server.port, certs, proxy_bind=PROXY_ADDRESS).start()
    yield server, proxy
    proxy.stop()


def test_a_ticket_journey_through_nginx_with_tls(proxied, make_pc, tmp_path):
    server, proxy = proxied
    trust = {"HELPLINE_CA_BUNDLE": str(proxy.certs.ca_file)}
    admin = make_pc("admin")
    # Without the CA the certificate is refused: nothing is sent.
    refused = admin.run("login", proxy.url, "-u", "root-admin", "--password-stdin", input="x\n")
    assert refused.code == ExitStatus.UNAVAILABLE, refused.stderr
    admin.ok("login", proxy.url, "-u", "root-admin", "--password-stdin", input="admin-password-for-tests\n", env=trust)
    number = admin.ok("ticket", "create", "Printer offline", "--json", env=trust).json()["number"]
    code = admin.ok("ticket", "pair-code", number, "--json", env=trust).json()["code"]

    user = make_pc("user")
    assert f"linked to ticket {number}" in user.ok("pair", code, "--server", proxy.url, env=trust).stdout
    shot = tmp_path / "shot.png"
    data = os.urandom(300_000)
    shot.write_bytes(data)
    user.ok("reply", "It says paper jam but there is no paper in it", "--file", str(shot), env=trust)
    assert "paper jam" in user.ok("status", env=trust).stdout

    detail = admin.ok("ticket", "show", number, "--json", env=trust).json()
    assert len(detail["agents"]) == 1 and detail["timeline"][-1]["kind"] == "reply"
    [attached] = detail["attachments"]
    inbox = tmp_path / "inbox"
    admin.ok("ticket", "attachment", number, attached["id"], "--dir", str(inbox), "--json", env=trust)
    assert (inbox / attached["filename"]).read_bytes() == data
    # The requests came through the proxy, the PC's signed ones too.
    assert "/v1/agent" in (proxy.folder / "access.log").read_text()
    # The server counts and audits the client's address as nginx saw it, not the proxy's, not a forged one.
    forged = urllib.request.Request(f"{proxy.url}/v1/auth/login", method="POST", headers={
        "Content-Type": "application/json", "X-Forwarded-For": "203.0.113.9"},
        data=json.dumps({"username": "root-admin", "password": "wrong password"}).encode())
    context = ssl.create_default_context(cafile=str(proxy.certs.ca_file))
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(forged, timeout=30, context=context)
    events = admin.ok("audit", "--json", env=trust).json()
    assert {e["ip"] for e in events if e["ip"]} == {"127.0.0.1"}
    assert [e["ip"] for e in events if e["action"] == "auth.login_failed"] == ["127.0.0.1"]


class TrustingPC(PC):
    """A PC told to trust the test CA, as an admin would add the company's CA."""

    def __init__(self, root, name: str, ca_file):
        super().__init__(root, name)
        self.ca_file = ca_file

    def env(self) -> dict[str, str]:
        return {**super().env(), "HELPLINE_CA_BUNDLE": str(self.ca_file)}


@dataclass
class Front:
    """The server as clients see it: nginx's https address."""

    url: str


@pytest.mark.skipif(shutil.which("ssh") is None, reason="tests/run.sh installs the OpenSSH client")
def test_a_remote_session_through_nginx_uses_the_websocket_relay_over_tls(proxied, tmp_path, terminals):
    server, proxy = proxied
    make_pc = lambda name: TrustingPC(tmp_path, name, proxy.certs.ca_file)  # noqa: E731
    admin = make_pc("admin")
    admin.login(Front(proxy.url))
    desk = make_desk(Front(proxy.url), admin, make_pc, tmp_path)
    user = UserTerminal(desk)
    terminals.append(user)
    run = EngineerRun(desk, desk.ticket, "--scope", "control", "--key", str(desk.key), "--",
                      "-o", "BatchMode=yes", "echo through-the-proxy; exit 5")
    try:
        user.asked()
        user.child.sendline(b"yes")
        status, out, err = run.finish()
    finally:
        run.stop()
    assert status == 5, err
    assert out.decode().strip() == "through-the-proxy"
    session = desk.wait_for_state(user.session_id, "ended")
    assert session["bytes_to_pc"] > 0 and session["bytes_from_pc"] > 0
    # Both sides' relay connections were WebSocket upgrades through nginx (101), over TLS.
    upgrades = [line for line in (proxy.folder / "access.log").read_text().splitlines() if "GET /v1/relay" in line]
    assert len(upgrades) >= 2 and all('" 101 ' in line for line in upgrades)
