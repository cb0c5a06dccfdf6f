"""The lab's fixed topology (SPEC section 7), described once.

The chroot lab (`outbound_router.lab`) is built from these values, and the files that repeat
them for Asterisk and Docker (`asterisk_conf/*.conf`, `docker-compose.yml`) are checked against
them by `tests/test_compose_consistency.py`: change an address here and that test names every
file that still has the old one.
"""

from __future__ import annotations

from dataclasses import dataclass

LOOPBACK = "127.0.0.1"

SIP_HOST = LOOPBACK
SIP_PORT = 5060
HTTP_HOST = LOOPBACK
HTTP_PORT = 8088
AGI_HOST = LOOPBACK
AGI_PORT = 4573

ARI_URL = f"http://{HTTP_HOST}:{HTTP_PORT}"
AGI_LISTEN = f"{AGI_HOST}:{AGI_PORT}"
ARI_APP = "outbound-router"
# Lab-only credentials: `lab up` uses ARI_USERNAME / ARI_PASSWORD from the environment when set.
LAB_ARI_USERNAME = "outbound-router"
LAB_ARI_PASSWORD = "lab-only-secret"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Asterisk reads its configuration from here (inside the chroot or the container).
ASTERISK_CONFIG_DIR = "/etc/outbound-router"
ASTERISK_CONFIG_FILE = f"{ASTERISK_CONFIG_DIR}/asterisk.conf"


@dataclass(frozen=True)
class Phone:
    """A source address Asterisk identifies as a phone, and where its calls go."""

    via: str  # "ari" | "agi" | "baseline"
    endpoint: str  # PJSIP endpoint name
    address: str
    context: str


@dataclass(frozen=True)
class CarrierTrunk:
    """A carrier trunk of the lab: the PJSIP endpoint and the address its SIPp listens on."""

    letter: str
    endpoint: str
    address: str
    port: int
    demo: str  # behaviour of the demo carrier `lab up` starts (see outbound_router.sipp)

    @property
    def uri(self) -> str:
        return f"sip:{self.address}:{self.port}"


PHONES: tuple[Phone, ...] = (
    Phone("ari", "phone-ari", "127.0.0.10", "from-ari-phones"),
    Phone("agi", "phone-agi", "127.0.0.20", "from-agi-phones"),
    Phone("baseline", "phone-baseline", "127.0.0.30", "from-baseline-phones"),
)

CARRIERS: tuple[CarrierTrunk, ...] = (
    CarrierTrunk("a", "carrier-a", "127.0.0.11", 5060, demo="answer"),
    CarrierTrunk("b", "carrier-b", "127.0.0.12", 5060, demo="unavailable"),
    CarrierTrunk("c", "carrier-c", "127.0.0.13", 5060, demo="busy"),
    CarrierTrunk("d", "carrier-d", "127.0.0.14", 5060, demo="ring"),
)

# The router's long-running services, started by `lab up` and by docker-compose.
SERVICES: tuple[str, ...] = ("ari", "agi")


def phone(via: str) -> Phone:
    for p in PHONES:
        if p.via == via:
            return p
    raise ValueError(f"unknown phone path {via!r}: use one of {', '.join(p.via for p in PHONES)}")


def carrier(name: str) -> CarrierTrunk:
    """A carrier by letter ("a"), endpoint ("carrier-a") or address ("127.0.0.11")."""
    for c in CARRIERS:
        if name in (c.letter, c.endpoint, c.address):
            return c
    known = ", ".join(c.letter for c in CARRIERS)
    raise ValueError(f"unknown carrier {name!r}: use one of {known}")


#: Every variable of SPEC section 6 that a service's environment may carry.
SERVICE_VARIABLES: tuple[str, ...] = (
    "REDIS_URL", "ARI_URL", "ARI_USERNAME", "ARI_PASSWORD", "ARI_APP", "AGI_LISTEN")


def service_env(name: str, *, redis_url: str, ari_username: str,
                ari_password: str) -> dict[str, str]:
    """Environment of the router service ``name`` (``seed`` or one of SERVICES) in this
    topology: only what it uses, so the FastAGI server and the seed never hold the ARI
    password."""
    env = {"REDIS_URL": redis_url}
    if name == "ari":
        env.update(ARI_URL=ARI_URL, ARI_USERNAME=ari_username, ARI_PASSWORD=ari_password,
                   ARI_APP=ARI_APP)
    elif name == "agi":
        env["AGI_LISTEN"] = AGI_LISTEN
    elif name != "seed":
        raise ValueError(f"unknown router service {name!r}")
    return env
