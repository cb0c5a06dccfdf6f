"""A private redis-server on a free loopback port, for the tests and the benchmarks (the lab
starts its own, detached, in ``outbound_router.lab``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS redis-server: the CA that signed ``cert`` (and clients trust)."""

    ca: Path
    cert: Path
    key: Path


class RedisProcess:
    """A redis-server of our own on a free loopback port; can be killed and restarted."""

    def __init__(self, workdir: Path, *extra: str, config: Path | None = None,
                 tls: TlsFiles | None = None) -> None:
        """``extra``: more redis-server options (``"--replicaof", "127.0.0.1", "6379"``,
        ``"--sentinel"``); ``config``: a config file (a Sentinel needs one it can rewrite);
        ``tls``: serve TLS only, on the port (``url`` is then ``rediss://`` naming the CA)."""
        self.port = free_port()
        self.workdir = workdir
        self.extra = extra
        self.config = config
        self.tls = tls
        self.url = (f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={tls.ca}" if tls
                    else f"redis://127.0.0.1:{self.port}/0")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = [str(self.config)] if self.config is not None else []
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            listen = ["--port", "0", "--tls-port", str(self.port),
                      "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                      "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(
            [REDIS_SERVER, *config, *listen, "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
             "--daemonize", "no", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)  # polling a server that has no readiness event
            finally:
                client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()
