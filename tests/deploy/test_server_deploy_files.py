"""The server's deployment files (deploy/server/): the systemd unit passes systemd-analyze with real paths,
nginx accepts the reverse-proxy site, and the PostgreSQL + S3 server.toml loads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from server.settings import load_settings
from tests.support.live import helpline_bin
from tests.support.nginx import SITE, check_config, nginx_bin, render_site, write_config
from tests.support.tls import make_certificates

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "server" / "helpline-server.service"


def real_unit(tmp_path: Path) -> Path:
    """The unit with the installed prefix's real paths in place of /opt/helpline."""
    text = UNIT.read_text()
    assert "/opt/helpline/bin/helpline server run" in text
    text = text.replace("/opt/helpline/bin/helpline", helpline_bin()).replace("file:///opt/helpline/README.md",
                                                                                f"file://{REPO / 'README.md'}")
    path = tmp_path / UNIT.name
    path.write_text(text)
    return path


def analyze(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def systemd_analyze():
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")


def test_server_unit_verifies_without_a_warning(tmp_path, systemd_analyze):
    done = analyze(real_unit(tmp_path))
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


def test_the_unit_check_catches_a_broken_unit(tmp_path, systemd_analyze):
    unit = real_unit(tmp_path)
    unit.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivileges=perhaps"))
    done = analyze(unit)
    assert "NoNewPrivileges" in done.stdout + done.stderr or "boolean" in done.stdout + done.stderr


def test_server_unit_is_hardened_and_reads_its_secrets_from_a_private_file():
    text = UNIT.read_text()
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "Restart=on-failure",
                 "User=helpline", "UMask=0077", "CapabilityBoundingSet=", "EnvironmentFile=-/etc/helpline/server.env",
                 "ExecStartPre=/opt/helpline/bin/helpline server migrate"):
        assert line in text.splitlines(), line
    assert "SECRET_KEY=" not in text.replace("HELPLINE_SECRET_KEY,", "")


def test_the_old_unit_path_is_gone_and_the_readme_names_the_new_one():
    assert not (REPO / "deploy" / "helpline-server.service").exists()
    readme = (REPO / "README.md").read_text()
    assert "`deploy/server/` holds" in readme and "`helpline-server.service`" in readme


@pytest.fixture
def nginx():
    if not nginx_bin():
        pytest.skip("nginx is not installed (tests/run.sh installs nginx-light)")


def test_nginx_accepts_the_site(tmp_path, nginx):
    certs = make_certificates(tmp_path / "tls")
    conf = write_config(tmp_path / "nginx", render_site(8700, 8443, 8080, certs))
    done = check_config(conf)
    assert done.returncode == 0 and "[warn]" not in done.stderr and "[emerg]" not in done.stderr, done.stderr


def test_the_nginx_check_catches_a_broken_site(tmp_path, nginx):
    certs = make_certificates(tmp_path / "tls")
    site = render_site(8700, 8443, 8080, certs).replace("proxy_read_timeout 90s;", "proxy_read_timeout ninety;")
    done = check_config(write_config(tmp_path / "nginx", site))
    assert done.returncode != 0 and "proxy_read_timeout" in done.stderr


def test_nginx_site_upgrades_the_relay_and_sizes_bodies_like_the_server():
    text = SITE.read_text()
    assert "location = /v1/relay" in text and "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in text
    defaults = load_settings(None)
    # The JSON limit is the server's max_request_bytes; upload chunks fit, with room, under /v1/uploads/.
    assert "client_max_body_size 1m;" in text and defaults.max_request_bytes == 1 << 20
    uploads = text.split("location /v1/uploads/", 1)[1].split("}", 1)[0]
    assert "client_max_body_size 8m;" in uploads and defaults.upload_chunk_bytes < 8 << 20
    recordings = text.split("/recording$", 1)[1].split("}", 1)[0]
    assert f"client_max_body_size {defaults.sessions.max_recording_bytes >> 20}m;" in recordings
    # Long polls (up to 55 s) end before the proxy gives up on them.
    from protocol.pc_requests import MAX_WAIT_SECONDS

    assert int(text.split("proxy_read_timeout ", 1)[1].split("s;", 1)[0]) > MAX_WAIT_SECONDS


def test_server_toml_for_postgresql_and_s3_loads():
    settings = load_settings(REPO / "deploy" / "server" / "server.toml")
    assert settings.resolved_database_url.startswith("postgresql://")
    assert settings.blobs.backend == "s3" and settings.blobs.s3_bucket
    assert settings.trusted_proxies == ["127.0.0.1", "::1"] and settings.host == "127.0.0.1"
    assert settings.upload_chunk_bytes < 8 << 20  # nginx's limit for a chunk
    assert settings.secret_key == "change-me"  # it comes from server.env, never from this file
    text = (REPO / "deploy" / "server" / "server.toml").read_text()
    assert "s3_secret_key =" not in text and "secret_key =" not in text
