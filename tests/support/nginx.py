"""deploy/server/nginx-helpline.conf made runnable on loopback: the shipped site with the test's
ports and certificate put in place of the example ones, inside a minimal nginx.conf of its own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import HOST, free_port
from tests.support.tls import TestCertificates

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "deploy" / "server" / "nginx-helpline.conf"
START_TIMEOUT = 20.0


def nginx_bin() -> str | None:
    return shutil.which("nginx") or (("/usr/sbin/nginx") if Path("/usr/sbin/nginx").exists() else None)


def render_site(upstream_port: int, https_port: int, http_port: int, certs: TestCertificates,
                proxy_bind: str | None = None) -> str:
    """The shipped site with this test's addresses and certificate; fails if an expected line is gone.

    ``proxy_bind``: the loopback address nginx connects to the server from, so that the server can tell the
    proxy (a trusted peer) from the client (127.0.0.1), as it does when they are different machines.
    """
    text = SITE.read_text()
    swaps = {
        "server 127.0.0.1:8700;": f"server {HOST}:{upstream_port};",
        "listen 443 ssl;": f"listen {HOST}:{https_port} ssl;",
        "listen [::]:443 ssl;": "",
        "listen 80;": f"listen {HOST}:{http_port};",
        "listen [::]:80;": "",
        "/etc/ssl/helpline/fullchain.pem": str(certs.cert_file),
        "/etc/ssl/helpline/privkey.pem": str(certs.key_file),
        "proxy_http_version 1.1;": "proxy_http_version 1.1;" + (f"\n    proxy_bind {proxy_bind};" if proxy_bind else ""),
    }
    for old, new in swaps.items():
        assert old in text, f"{SITE.name} no longer has {old!r}"
        text = text.replace(old, new)
    return text


def write_config(folder: Path, site: str) -> Path:
    """A whole nginx.conf around ``site`` whose every file (pid, logs, temporary bodies) is in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / "temp"
    temp.mkdir(exist_ok=True)
    (folder / "helpline-site.conf").write_text(site)
    conf = folder / "nginx.conf"
    conf.write_text(
        ""
        # Run as root, nginx's workers would switch to nobody, who cannot reach the test's private folders.
        + ("user root root;\n" if os.geteuid() == 0 else "")
        + f"pid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} warn;\n"
        "daemon off;\nworker_processes 1;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {folder / 'access.log'};\n"
        f"    client_body_temp_path {temp / 'body'};\n    proxy_temp_path {temp / 'proxy'};\n"
        f"    fastcgi_temp_path {temp / 'fastcgi'};\n    uwsgi_temp_path {temp / 'uwsgi'};\n    scgi_temp_path {temp / 'scgi'};\n"
        f"    include {folder / 'helpline-site.conf'};\n"
        "}\n"
    )
    return conf


def check_config(conf: Path) -> subprocess.CompletedProcess:
    return subprocess.run([nginx_bin(), "-t", "-q", "-p", str(conf.parent), "-c", str(conf)],
                          capture_output=True, text=True, timeout=30)


@dataclass
class Nginx:
    """nginx serving the shipped site on loopback, in front of a server on ``upstream_port``; stopped by PID."""

    folder: Path
    upstream_port: int
    certs: TestCertificates
    proxy_bind: str | None = None
    https_port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.https_port}"

    def start(self) -> Nginx:
        for _ in range(5):  # a port free a moment ago may be taken by another test: try fresh ones (bounded)
            self.https_port = free_port()
            conf = write_config(self.folder, render_site(self.upstream_port, self.https_port, free_port(), self.certs,
                                                             self.proxy_bind))
            log = (self.folder / "stderr.log").open("ab")
            self.process = subprocess.Popen([nginx_bin(), "-p", str(self.folder), "-c", str(conf)],
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            if self._ready():
                return self
            self.stop()
        raise RuntimeError(f"nginx did not start:\n{self.log()}")

    def _ready(self) -> bool:
        import ssl

        context = ssl.create_default_context(cafile=str(self.certs.ca_file))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1, context=context) as resp:
                    if resp.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then the master exits
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.folder / "stderr.log", self.folder / "error.log")
                       if p.exists())
