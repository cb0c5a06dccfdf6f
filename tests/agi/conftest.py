"""Fixtures of the FastAGI protocol tests: a real server on a free loopback port."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping

import pytest

from agi.scripts import Scripts
from agi.server import AgiServer, Handler, Limits
from redis_seed.routes_file import parse_routes
from routing.snapshot import Snapshot

from .agi_fake_asterisk import ServerFactory

ROUTES = """
defaults: {country_code: "34", setup_timeout: 5, ring_timeout: 30, max_attempts: 6}
carriers:
  peering: {trunks: [carrier-a, carrier-b]}
  cheap: {trunks: [carrier-c], number_format: "00E164", prefix: "99"}
  picky:
    trunks: [carrier-d]
    failover: {retry: [486], stop: [503]}
target_patterns:
  spain: {prefix: "+34"}
  france: {prefix: "+33"}
  premium: {regex: '^\\+3490[0-9]{6}$'}
outgoing_routes:
  - {name: spain-peering, pattern: spain, carrier: peering, priority: 1}
  - {name: spain-cheap, pattern: spain, carrier: cheap, priority: 2}
  - {name: france-picky, pattern: france, carrier: picky, priority: 1}
  - {name: france-cheap, pattern: france, carrier: cheap, priority: 2}
  - {name: no-premium, pattern: premium, action: block, priority: 0}
"""


@pytest.fixture
def snapshot() -> Snapshot:
    return Snapshot.build(parse_routes(ROUTES, "test-routes.yaml"), "v-test")


@pytest.fixture
async def agi_server() -> AsyncIterator[ServerFactory]:
    """Start an AgiServer on a free port: ``await agi_server(handlers, limits=..., allow=...)``."""
    servers: list[AgiServer] = []

    async def start(handlers: Mapping[str, Handler], **kwargs: object) -> AgiServer:
        kwargs.setdefault("limits", Limits())
        server = AgiServer(handlers, host="127.0.0.1", port=0, **kwargs)  # type: ignore[arg-type]
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close(grace=1.0)


@pytest.fixture
async def router(agi_server: ServerFactory, snapshot: Snapshot) -> AgiServer:
    """The real route/outcome scripts over the test table."""
    scripts = Scripts(lambda: snapshot, random.Random(7))
    return await agi_server(scripts.handlers())
