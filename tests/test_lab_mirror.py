"""Which Debian archive the lab's debootstrap uses (no network: only the parsing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from outbound_router.lab import DEFAULT_DEBIAN_MIRROR, debian_mirror


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTBOUND_ROUTER_DEBIAN_MIRROR", raising=False)


def test_the_mirror_of_a_deb822_source_is_used(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_the_mirror_of_a_one_line_source_is_used(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian sid main\n"
        "deb [arch=amd64] http://local.example/debian bookworm main\n")
    assert debian_mirror(tmp_path) == "http://local.example/debian"


def test_the_environment_wins_and_nothing_found_gives_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert debian_mirror(tmp_path) == DEFAULT_DEBIAN_MIRROR
    monkeypatch.setenv("OUTBOUND_ROUTER_DEBIAN_MIRROR", "http://own.example/debian")
    assert debian_mirror(tmp_path) == "http://own.example/debian"
