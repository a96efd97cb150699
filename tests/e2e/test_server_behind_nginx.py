"""The shipped nginx site (deploy/server/nginx-helpline.conf) in front of a live server: TLS from a CA the
CLI is told to trust (HELPLINE_CA_BUNDLE), and a whole ticket journey through it."""

from __future__ import annotations

import os

import pytest

from protocol.errors import ExitStatus
from tests.support.nginx import Nginx, nginx_bin
from tests.support.tls import make_certificates

pytestmark = pytest.mark.e2e


@pytest.fixture
def proxied(server_factory, tmp_path):
    if not nginx_bin():
        pytest.skip("nginx is not installed (tests/run.sh installs nginx-light)")
    server = server_factory(trusted_proxies="127.0.0.1")
    certs = make_certificates(tmp_path / "tls")
    proxy = Nginx(tmp_path / "nginx", server.port, certs).start()
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
