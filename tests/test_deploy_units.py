"""The deployment files in deploy/: systemd units systemd itself accepts, and environment
files that name only what the services read, with values the services accept."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from outbound_router.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
GUIDE = DEPLOY.parent / "docs" / "deploy.md"
SERVICES = ("ari", "agi")
#: What each service reads from its environment (outbound_router/settings.py).
READ = {
    "ari": {"REDIS_URL", "REDIS_PREFIX", "ARI_URL", "ARI_USERNAME", "ARI_PASSWORD", "ARI_APP"},
    "agi": {"REDIS_URL", "REDIS_PREFIX", "AGI_LISTEN", "AGI_ALLOW"},
}


def unit(service: str) -> str:
    return (DEPLOY / "systemd" / f"outbound-router-{service}.service").read_text()


def env_file(service: str, *, commented: bool = False) -> dict[str, str]:
    """The KEY=VALUE lines of deploy/SERVICE.env.example (with ``commented``: also those
    commented out, the alternatives it shows)."""
    values = {}
    for line in (DEPLOY / f"{service}.env.example").read_text().splitlines():
        line = line.strip()
        if commented and line.startswith("# ") and "=" in line and line[2:3].isupper():
            line = line[2:]
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{service}.env.example: not KEY=VALUE: {line!r}"
            values[key] = value
    return values


@pytest.mark.parametrize("service", SERVICES)
def test_systemd_accepts_the_unit(service: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify wants ExecStart to exist: the console script of this checkout's venv stands in
    # for the deployment's /opt/outbound-router/venv/bin/outbound-router.
    script = Path(sys.executable).parent / "outbound-router"
    text = unit(service)
    assert "ExecStart=/opt/outbound-router/venv/bin/outbound-router " + service in text
    path = tmp_path / f"outbound-router-{service}.service"
    path.write_text(text.replace("/opt/outbound-router/venv/bin/outbound-router", str(script)))
    done = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize("service", SERVICES)
def test_the_environment_file_names_only_what_the_service_reads(service: str) -> None:
    names = set(env_file(service, commented=True))
    assert names <= READ[service], names - READ[service]
    assert f"EnvironmentFile=/etc/outbound-router/{service}.env" in unit(service)


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("commented", [False, True], ids=["as-is", "alternatives"])
def test_the_environment_file_holds_values_the_service_accepts(service: str,
                                                               commented: bool) -> None:
    read = {"ari": Settings.for_ari, "agi": Settings.for_agi}[service]
    settings = read(env_file(service, commented=commented))
    if service == "ari":
        settings.require_ari_credentials()


@pytest.mark.parametrize("service", SERVICES)
def test_the_unit_keeps_a_routes_cache_in_a_directory_systemd_makes(service: str,
                                                                   tmp_path: Path) -> None:
    # Without one, a service started while Redis was away had no routes: every call ERROR.
    text = unit(service)
    assert "CacheDirectory=outbound-router\n" in text
    (path,) = re.findall(r"^Environment=ROUTES_CACHE=(\S+)$", text, re.MULTILINE)
    assert path == f"/var/cache/outbound-router/routes-{service}.cache"
    read = {"ari": Settings.for_ari, "agi": Settings.for_agi}[service]
    mine = str(tmp_path / f"routes-{service}.cache")
    assert read({"ROUTES_CACHE": mine}).routes_cache == mine


def test_a_routes_cache_where_none_can_be_written_stops_the_service(tmp_path: Path) -> None:
    from outbound_router.settings import SettingsError

    for path, says in [(tmp_path / "no-such-dir" / "r.cache", "its directory does not exist"),
                       (tmp_path, "is a directory")]:
        for read in (Settings.for_ari, Settings.for_agi):
            with pytest.raises(SettingsError, match=says):
                read({"ROUTES_CACHE": str(path)})


def test_only_the_ari_service_gets_the_ari_password() -> None:
    assert "ARI_PASSWORD" in env_file("ari")
    assert "ARI_PASSWORD" not in env_file("agi", commented=True)


@pytest.mark.parametrize("service", SERVICES)
def test_an_environment_file_with_a_password_is_installed_for_root_only(service: str) -> None:
    # agi.env was installed 0644 although its REDIS_URL holds the Redis password: any local
    # user could read it (and, with the seeding user's password, rewrite the routing table).
    values = env_file(service, commented=True)
    secret = "ARI_PASSWORD" in values or urlsplit(values["REDIS_URL"]).password is not None
    assert secret
    (mode,) = re.findall(rf"install -m (0[0-7]{{3}}) deploy/{service}\.env\.example ",
                         GUIDE.read_text())
    assert mode == "0600"
    assert "Mode 0600" in (DEPLOY / f"{service}.env.example").read_text()
