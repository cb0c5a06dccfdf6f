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


def test_a_failed_debootstrap_says_why_and_leaves_no_pipe_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The build reads debootstrap's output through a pipe; it was never closed, and the
    # ResourceWarning of the first lab session on a fresh machine failed its first test.
    import gc
    import os
    import warnings

    from outbound_router.lab import LabError, Paths, build_chroot

    if os.geteuid() != 0:
        pytest.skip("build_chroot needs root")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "debootstrap"
    fake.write_text("#!/bin/sh\necho 'I: Retrieving InRelease'\necho 'E: no network'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(LabError) as excinfo:
            build_chroot(Paths(cache=tmp_path / "cache"), say=lambda line: None)
        message = str(excinfo.value)
        del excinfo
        gc.collect()
    assert "debootstrap failed" in message and "E: no network" in message
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert list((tmp_path / "cache").glob("chroot.build-*")) == []
