"""docker-compose.yml, docker/ and asterisk_conf/ agree with outbound_router/topology.py.

The chroot lab is built from topology.py; the files Docker and Asterisk read repeat its
addresses, ports, credentials and services. Each check below names the file and the value
that drifted. The last tests prove the checks catch a drift.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from outbound_router import lab, sipp, topology

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "asterisk_conf"
ENV_DEFAULT = re.compile(r"^\$\{(\w+):-(.*)\}$")
COMPOSE_CACHE_DIR = "/var/cache/outbound-router"


# ---- readers -------------------------------------------------------------------------------


def asterisk_sections(text: str) -> list[tuple[str, dict[str, str]]]:
    """[(section name, options)] of an Asterisk config; templates' options are merged in."""
    sections: list[tuple[str, dict[str, str]]] = []
    templates: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^\[([^\]]+)\](?:\(([^)]*)\))?$", line)
        if m:
            name, options = m.group(1), [o.strip() for o in (m.group(2) or "").split(",") if o]
            current = {}
            for parent in options:
                current.update(templates.get(parent, {}))
            if "!" in options:
                templates[name] = current
            else:
                sections.append((name, current))
            continue
        if current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip().rstrip(">").strip()] = value.strip().lstrip(">").strip()
    return sections


def pjsip_objects(text: str, kind: str) -> dict[str, dict[str, str]]:
    return {name: opts for name, opts in asterisk_sections(text) if opts.get("type") == kind}


def resolve(value: Any) -> str:
    """A compose value with ${VAR:-default} taken at its default (what the lab runs with)."""
    m = ENV_DEFAULT.match(str(value))
    return m.group(2) if m else str(value)


# ---- the checks ----------------------------------------------------------------------------


def compose_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    services = compose.get("services", {})
    carriers = {f"carrier-{c.letter}": c for c in topology.CARRIERS}
    wanted = {"asterisk", "redis", "seed", *topology.SERVICES, *carriers}
    if set(services) != wanted:
        problems.append(f"services {sorted(services)} != {sorted(wanted)}")
    for name, svc in services.items():
        if name != "asterisk" and svc.get("network_mode") != "service:asterisk":
            problems.append(f"{name}: network_mode must be service:asterisk (loopback topology)")
    asterisk_env = services.get("asterisk", {}).get("environment") or {}
    env = {k: resolve(v) for k, v in asterisk_env.items()}
    if (env.get("ARI_USERNAME"), env.get("ARI_PASSWORD")) != (
            topology.LAB_ARI_USERNAME, topology.LAB_ARI_PASSWORD):
        problems.append(f"asterisk: ARI credentials {env} != the lab's")
    for name in ("seed", *topology.SERVICES):
        router_env = topology.service_env(name, redis_url="redis://127.0.0.1:6379/0",
                                          ari_username=topology.LAB_ARI_USERNAME,
                                          ari_password=topology.LAB_ARI_PASSWORD)
        svc = services.get(name, {})
        env = {k: resolve(v) for k, v in (svc.get("environment") or {}).items()}
        if name in topology.SERVICES:
            # as the lab's and the systemd units': the last version loaded, kept on a volume
            # so that a container restarted while Redis is away routes with it
            router_env["ROUTES_CACHE"] = f"{COMPOSE_CACHE_DIR}/routes-{name}.cache"
            mounts = {str(v).rsplit(":", 1)[-1] for v in svc.get("volumes") or []}
            if COMPOSE_CACHE_DIR not in mounts:
                problems.append(f"{name}: no volume mounted on {COMPOSE_CACHE_DIR}")
        if env != router_env:
            problems.append(f"{name}: environment {env} != {router_env}")
    for name in topology.SERVICES:
        if services.get(name, {}).get("command") != ["outbound-router", name]:
            problems.append(f"{name}: command must be ['outbound-router', {name!r}]")
    seed_cmd = services.get("seed", {}).get("command", [])
    if seed_cmd[:2] != ["outbound-router", "seed"] or not (REPO / seed_cmd[-1]).is_file():
        problems.append(f"seed: command {seed_cmd} does not seed an existing routes file")
    # A container's start is not Redis answering: `seed` would exit 2, and the services that
    # wait for its success would never start.
    seed_deps = services.get("seed", {}).get("depends_on") or {}
    seed_needs = seed_deps.get("redis") if isinstance(seed_deps, dict) else None
    if seed_needs != {"condition": "service_healthy"} or not services.get(
            "redis", {}).get("healthcheck"):
        problems.append("seed: must wait for redis to be healthy (a healthcheck on redis, "
                        "depends_on: {redis: {condition: service_healthy}})")
    redis_cmd = [str(x) for x in services.get("redis", {}).get("command", [])]
    redis_url = router_env["REDIS_URL"]
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    if "--port" not in redis_cmd or redis_cmd[redis_cmd.index("--port") + 1] != port:
        problems.append(f"redis: command {redis_cmd} does not listen on {port} ({redis_url})")
    for name, trunk in carriers.items():
        cmd = services.get(name, {}).get("command")
        want = ["python", "-m", "outbound_router.sipp", "carrier", trunk.letter, trunk.demo]
        if cmd != want:
            problems.append(f"{name}: command {cmd} != {want}")
    return problems


def conf_problems(files: dict[str, str]) -> list[str]:
    problems = []
    pjsip = files["pjsip.conf"]
    transports = pjsip_objects(pjsip, "transport")
    binds = {t.get("bind") for t in transports.values()}
    if binds != {f"{topology.SIP_HOST}:{topology.SIP_PORT}"}:
        problems.append(f"pjsip.conf: transport bind {binds}")
    endpoints = pjsip_objects(pjsip, "endpoint")
    aors = pjsip_objects(pjsip, "aor")
    identify = {o["endpoint"]: o.get("match") for o in pjsip_objects(pjsip, "identify").values()}
    for name, ep in endpoints.items():
        if ep.get("direct_media") != "no":
            problems.append(f"pjsip.conf: endpoint {name} without direct_media = no")
    for ph in topology.PHONES:
        if identify.get(ph.endpoint) != ph.address:
            problems.append(f"pjsip.conf: {ph.endpoint} identified by {identify.get(ph.endpoint)}"
                            f", not {ph.address}")
        if endpoints.get(ph.endpoint, {}).get("context") != ph.context:
            problems.append(f"pjsip.conf: {ph.endpoint} context is not {ph.context}")
    for c in topology.CARRIERS:
        if identify.get(c.endpoint) != c.address:
            problems.append(f"pjsip.conf: {c.endpoint} identified by {identify.get(c.endpoint)}")
        if aors.get(c.endpoint, {}).get("contact") != c.uri:
            problems.append(f"pjsip.conf: {c.endpoint} contact is not {c.uri}")
        if endpoints.get(c.endpoint, {}).get("aors") != c.endpoint:
            problems.append(f"pjsip.conf: endpoint {c.endpoint} has no aor {c.endpoint}")
    http = dict(asterisk_sections(files["http.conf"])).get("general", {})
    want_http = (topology.HTTP_HOST, str(topology.HTTP_PORT))
    if (http.get("bindaddr"), http.get("bindport")) != want_http:
        problems.append(f"http.conf: binds {http.get('bindaddr')}:{http.get('bindport')}")
    ext = files["extensions.conf"]
    glob = dict(asterisk_sections(ext)).get("globals", {})
    if glob.get("ROUTER_ARI_APP") != topology.ARI_APP:
        problems.append(f"extensions.conf: ROUTER_ARI_APP {glob.get('ROUTER_ARI_APP')}")
    if not glob.get("ROUTER_AGI_URL", "").startswith(f"agi://{topology.AGI_LISTEN}/"):
        problems.append(f"extensions.conf: ROUTER_AGI_URL {glob.get('ROUTER_AGI_URL')}")
    contexts = {name for name, _ in asterisk_sections(ext + files.get("extensions_agi.conf", ""))}
    for ph in topology.PHONES:
        if ph.context not in contexts:
            problems.append(f"extensions: no context {ph.context}")
    asterisk = dict(asterisk_sections(files["asterisk.conf"]))
    if asterisk.get("directories", {}).get("astetcdir") != topology.ASTERISK_CONFIG_DIR:
        problems.append("asterisk.conf: astetcdir is not " + topology.ASTERISK_CONFIG_DIR)
    return problems


def dockerfile_problems(asterisk_dockerfile: str, entrypoint: str) -> list[str]:
    problems = []
    if "FROM debian:sid-slim" not in asterisk_dockerfile:
        problems.append("docker/asterisk/Dockerfile: not FROM debian:sid-slim")
    for pkg in lab.DEBOOTSTRAP_PACKAGES:
        if not re.search(rf"\b{re.escape(pkg)}\b", asterisk_dockerfile):
            problems.append(f"docker/asterisk/Dockerfile: does not install {pkg}")
    if f"COPY asterisk_conf/ {topology.ASTERISK_CONFIG_DIR}/" not in asterisk_dockerfile:
        problems.append(f"docker/asterisk/Dockerfile: asterisk_conf not in "
                        f"{topology.ASTERISK_CONFIG_DIR}")
    if f"-C {topology.ASTERISK_CONFIG_FILE}" not in entrypoint:
        problems.append(f"docker/asterisk/entrypoint.sh: not started with "
                        f"-C {topology.ASTERISK_CONFIG_FILE}")
    return problems


# ---- tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def conf_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in CONF.glob("*.conf")}


def test_compose_runs_the_lab_topology(compose):
    assert compose_problems(compose) == []


def test_asterisk_conf_matches_the_lab_topology(conf_files):
    assert conf_problems(conf_files) == []


def test_asterisk_image_is_the_chroot_lab_asterisk():
    assert dockerfile_problems((REPO / "docker/asterisk/Dockerfile").read_text(),
                               (REPO / "docker/asterisk/entrypoint.sh").read_text()) == []


def test_chroot_lab_and_image_render_the_same_ari_conf():
    # The entrypoint's sed and the lab's Python render the same template the same way.
    rendered = lab.render_ari_conf(topology.LAB_ARI_USERNAME, topology.LAB_ARI_PASSWORD)
    users = {n: o for n, o in asterisk_sections(rendered) if o.get("type") == "user"}
    assert users == {topology.LAB_ARI_USERNAME: {
        "type": "user", "read_only": "no", "password_format": "plain",
        "password": topology.LAB_ARI_PASSWORD}}


def test_every_demo_behaviour_has_a_scenario():
    for c in topology.CARRIERS:
        behaviour = sipp.Behaviour.parse(c.demo)
        assert (sipp.SCENARIO_DIR / behaviour.template).is_file()


# Drift is caught: one changed value each, in a copy.

@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["services"]["carrier-b"]["command"].__setitem__(4, "c"), "carrier-b"),
        (lambda d: d["services"]["ari"]["environment"].__setitem__(
            "ARI_URL", "http://127.0.0.1:8089"), "ari"),
        (lambda d: d["services"]["agi"]["environment"].__setitem__(
            "ARI_PASSWORD", "${ARI_PASSWORD:-lab-only-secret}"), "agi"),
        (lambda d: d["services"]["asterisk"]["environment"].__setitem__(
            "ARI_PASSWORD", "${ARI_PASSWORD:-other}"), "asterisk"),
        (lambda d: d["services"]["redis"].__setitem__(
            "command", ["redis-server", "--port", "6380"]), "redis"),
        (lambda d: d["services"].pop("agi"), "services"),
        (lambda d: d["services"]["carrier-d"].pop("network_mode"), "carrier-d"),
        (lambda d: d["services"]["seed"].__setitem__("depends_on", ["redis"]), "seed"),
        (lambda d: d["services"]["redis"].pop("healthcheck"), "seed"),
        (lambda d: d["services"]["agi"].pop("volumes"), "agi"),
        (lambda d: d["services"]["ari"]["environment"].pop("ROUTES_CACHE"), "ari"),
    ],
)
def test_compose_drift_is_caught(compose, edit, expected):
    drifted = copy.deepcopy(compose)
    edit(drifted)
    problems = compose_problems(drifted)
    assert problems and any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        ("pjsip.conf", "contact = sip:127.0.0.13:5060", "contact = sip:127.0.0.15:5060"),
        ("pjsip.conf", "match = 127.0.0.20", "match = 127.0.0.21"),
        ("pjsip.conf", "bind = 127.0.0.1:5060", "bind = 0.0.0.0:5060"),
        ("http.conf", "bindport = 8088", "bindport = 8089"),
        ("extensions.conf", "ROUTER_ARI_APP = outbound-router", "ROUTER_ARI_APP = other"),
    ],
)
def test_asterisk_conf_drift_is_caught(conf_files, file, old, new):
    assert old in conf_files[file]
    drifted = {**conf_files, file: conf_files[file].replace(old, new)}
    assert any(p.startswith(file) for p in conf_problems(drifted))
