"""Redis over TLS for real (SPEC section 5: ``rediss://``): a redis-server serving TLS only,
with a certificate for 127.0.0.1 signed by a CA of the test's own (openssl)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_tables import generation_of, generation_table

from outbound_router.local_redis import RedisProcess, TlsFiles
from redis_seed.connection import close_client, sync_client
from redis_seed.reader import SnapshotReader
from redis_seed.store import publish

EXAMPLE = Path(__file__).resolve().parents[2] / "redis_seed" / "routes.example.yaml"


def make_tls_files(directory: Path) -> TlsFiles:
    """A throw-away CA, and a server certificate for IP 127.0.0.1 that it signed."""
    directory.mkdir()
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=outbound-router test CA", "-keyout", "ca.key", "-out", files.ca.name)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", files.key.name, "-out", "server.csr")
    (directory / "san.cnf").write_text("subjectAltName = IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", files.ca.name, "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", files.cert.name)
    return files


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "redis", tls=make_tls_files(tmp_path / "tls"))
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outbound_router.cli", *args],
                          env={**os.environ, "REDIS_URL": url},
                          capture_output=True, text=True, timeout=60)


def test_the_cli_seeds_over_tls_when_it_trusts_the_servers_ca(tls_redis: RedisProcess) -> None:
    seeded = cli(tls_redis.url, "seed", str(EXAMPLE))
    assert seeded.returncode == 0, seeded.stderr
    assert seeded.stdout.strip() in cli(tls_redis.url, "versions").stdout


def test_a_server_certificate_nobody_vouches_for_is_refused(tls_redis: RedisProcess) -> None:
    untrusted = tls_redis.url.split("?")[0]  # the system's CAs only
    out = cli(untrusted, "versions")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "does not trust its certificate" in out.stderr
    assert "certificate verify failed" in out.stderr and "?ssl_ca_certs=" in out.stderr
    plain = cli(untrusted.replace("rediss://", "redis://"), "versions")  # no TLS at all
    assert plain.returncode == 2 and "cannot reach Redis" in plain.stderr
    assert "If that Redis speaks TLS only (tls-port), use rediss://." in plain.stderr


def test_a_ca_file_that_is_not_there_is_named(tls_redis: RedisProcess, tmp_path: Path) -> None:
    # redis-py says "Error 2 connecting to 127.0.0.1:PORT. No such file or directory."
    gone = tmp_path / "no-such-ca.pem"
    out = cli(tls_redis.url.split("?")[0] + f"?ssl_ca_certs={gone}", "versions")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"REDIS_URL names ssl_ca_certs={gone}, which this user cannot read" in out.stderr


async def test_a_reader_that_does_not_trust_the_certificate_says_what_to_do(
        tls_redis: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
    # The routers' log said "certificate verify failed" and nothing of the CA to name.
    async with SnapshotReader(tls_redis.url.split("?")[0]) as reader, asyncio.timeout(5):
        while reader.failed_attempts < 1:  # noqa: ASYNC110 (a counter, no event)
            await asyncio.sleep(0.02)
    assert "certificate verify failed" in caplog.text
    assert "Name the CA that signed it in REDIS_URL (?ssl_ca_certs=" in caplog.text


async def test_a_reader_follows_versions_over_tls(tls_redis: RedisProcess) -> None:
    seeder = sync_client(tls_redis.url)
    try:
        v1 = publish(seeder, generation_table(1))
        async with SnapshotReader(tls_redis.url, poll_interval=0.5) as reader:
            assert reader.version == v1
            v2 = publish(seeder, generation_table(2))
            assert generation_of(await reader.wait_for_version(v2, timeout=1.0)) == 2
    finally:
        close_client(seeder)


@pytest.mark.parametrize("sentinel_tls", [False, True])
async def test_a_tls_master_of_a_private_ca_is_reached_through_a_sentinel(
        tls_redis: RedisProcess, tmp_path: Path, sentinel_tls: bool) -> None:
    # rediss+sentinel:// took no option but sentinel_password: a master whose certificate
    # a CA of one's own signed could not be reached through Sentinel at all, and the
    # sentinels (and their password) were always spoken to in plain text.
    assert tls_redis.tls is not None
    files = tls_redis.tls
    conf = tmp_path / "sentinel" / "sentinel.conf"
    conf.parent.mkdir()
    conf.write_text(f"sentinel monitor mymaster 127.0.0.1 {tls_redis.port} 1\n"
                    f"tls-replication yes\ntls-cert-file {files.cert}\n"
                    f"tls-key-file {files.key}\ntls-ca-cert-file {files.ca}\n")
    sentinel = RedisProcess(conf.parent, "--sentinel", config=conf,
                            tls=files if sentinel_tls else None)
    sentinel.start()
    try:
        url = (f"rediss+sentinel://127.0.0.1:{sentinel.port}/mymaster?ssl_ca_certs={files.ca}"
               + ("&sentinel_ssl=true" if sentinel_tls else ""))
        seeded = cli(url, "seed", str(EXAMPLE))
        assert seeded.returncode == 0, seeded.stderr
        async with SnapshotReader(url, poll_interval=0.5) as reader:
            assert reader.version == seeded.stdout.strip()
        untrusted = cli(url.replace(f"ssl_ca_certs={files.ca}", "ssl_cert_reqs=required"),
                        "versions")
        # (redis-py reports a sentinel it cannot reach as "No master found")
        refused = "No master found" if sentinel_tls else "certificate verify failed"
        assert untrusted.returncode == 2 and refused in untrusted.stderr, untrusted.stderr
    finally:
        sentinel.kill()


def test_tls_options_of_a_sentinel_url_are_checked() -> None:
    from redis_seed.urls import check_redis_url

    for url, says in [
        ("redis+sentinel://h/m?ssl_ca_certs=/ca.pem", "need rediss+sentinel://"),
        ("rediss+sentinel://h/m?ssl_cert_reqs=maybe", "none, optional or required"),
        ("rediss+sentinel://h/m?sentinel_ssl=perhaps", "true or false"),
        ("rediss+sentinel://h/m?ssl_password=s3cret&nope=1", "unknown Sentinel URL option"),
    ]:
        with pytest.raises(ValueError, match=re.escape(says)) as info:
            check_redis_url(url)
        assert "s3cret" not in str(info.value)
