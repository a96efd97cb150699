"""A real S3 endpoint for tests: moto's server in a subprocess on 127.0.0.1.

It runs through :mod:`tests.support.moto_main`, which makes multipart completion
atomic as S3 is.

:class:`MotoServer` starts that server on a free loopback port,
waits (bounded) until it answers HTTP, and stops it by its PID. The pytest
fixtures ``moto_server`` (one per session) and ``s3_bucket`` (a fresh bucket per
test) are exposed to a test folder by importing them in its conftest.py.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import HOST, free_port  # noqa: F401 - re-exported for tests

ACCESS_KEY = "helpline-test-access"
SECRET_KEY = "helpline-test-secret-not-a-real-key"
REGION = "us-east-1"
POLL_INTERVAL = 0.05
REPO_ROOT = Path(__file__).resolve().parents[2]


class MotoServer:
    """One moto_server process on 127.0.0.1; use :meth:`start`, then :meth:`stop`."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path, started_in: float):
        self.process = process
        self.port = port
        self.log_path = log_path
        self.started_in = started_in  # seconds from spawn to the first HTTP answer
        self._client: Any = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @classmethod
    def start(cls, log_dir: Path, *, timeout: float = 30.0, attempts: int = 3) -> MotoServer:
        """Spawn moto's server and return once it answers; raise RuntimeError if it never does.

        A port taken between choosing and binding it costs one of ``attempts``.
        """
        failures = []
        for attempt in range(attempts):
            port = free_port()
            log_path = log_dir / f"moto-{port}.log"
            began = time.monotonic()
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "tests.support.moto_main", "--host", HOST, "--port", str(port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "MOTO_PORT": str(port)},
                    cwd=REPO_ROOT,  # so that -m finds tests.support.moto_main
                )
            server = cls(process, port, log_path, 0.0)
            if server._wait_ready(began + timeout, polls=int(timeout / POLL_INTERVAL) + 1):
                server.started_in = time.monotonic() - began
                return server
            server.stop()
            failures.append(f"attempt {attempt + 1} on port {port}: {server.log_tail()}")
        raise RuntimeError("moto_server did not start:\n" + "\n".join(failures))

    def _wait_ready(self, deadline: float, polls: int) -> bool:
        for _ in range(polls):
            if self.process.poll() is not None or time.monotonic() > deadline:
                return False
            connection = http.client.HTTPConnection(HOST, self.port, timeout=1.0)
            try:
                connection.request("GET", "/moto-api/")
                connection.getresponse().read()
                return True
            except OSError:
                time.sleep(POLL_INTERVAL)
            finally:
                connection.close()
        return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL if it lingers past ``timeout``."""
        if self.process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout)

    def client(self) -> Any:
        """Return a boto3 S3 client for this server (for test set-up and inspection)."""
        import boto3
        from botocore.config import Config

        if self._client is None:
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.url,
                region_name=REGION,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                config=Config(s3={"addressing_style": "path"}),
            )
        return self._client

    def blob_settings(self, bucket: str, **more: str) -> dict[str, str]:
        """The server settings that keep blobs in ``bucket`` here, as ``blobs`` fields (``BlobSettings(**...)``)."""
        return {"backend": "s3", "s3_bucket": bucket, "s3_endpoint_url": self.url, "s3_region": REGION,
                "s3_access_key": ACCESS_KEY, "s3_secret_key": SECRET_KEY, **more}

    def blob_env(self, bucket: str, **more: str) -> dict[str, str]:
        """The same settings as ``blobs__<name>`` keys, as a test server takes them (HELPLINE_BLOBS__<NAME>)."""
        return {f"blobs__{name}": value for name, value in self.blob_settings(bucket, **more).items()}

    def create_bucket(self) -> str:
        """Create a bucket with a fresh name and return the name."""
        name = f"helpline-test-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto S3 server on 127.0.0.1 for the whole test session."""
    server = MotoServer.start(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> str:
    """The name of a new, empty bucket on the session's moto server."""
    return moto_server.create_bucket()
