"""`lab status` on an ARI that accepts connections and never answers: what Asterisk's ARI
deadlock looks like from outside (docs/ari.md)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from outbound_router import lab


@pytest.fixture
def silent_http() -> Iterator[str]:
    """A listening socket that never accepts: connections complete (the kernel's backlog) and
    no byte ever comes back, as from Asterisk's HTTP server once ARI is stuck."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_an_ari_that_never_answers_is_stuck(silent_http: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab.topology, "ARI_URL", silent_http)
    code, _ = lab.ari_request("/applications/outbound-router", ("u", "p"), timeout=0.3)
    line, problem = lab.stasis_app_status(code)
    assert problem == "ARI stuck"
    assert line.startswith("stasis     ARI does not answer GET /applications")
    assert "restart Asterisk" in line


@pytest.mark.parametrize(("code", "problem"), [(200, None), (404, "the Stasis app not registered")])
def test_the_stasis_app_line_says_whether_the_app_is_registered(code: int,
                                                                 problem: str | None) -> None:
    line, got = lab.stasis_app_status(code)
    assert got == problem
    assert ("NOT registered" in line) == (code == 404)
