"""Errors of the routes file and of the Redis versions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a routes file, at a 1-based line."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        if self.line <= 0:  # about the whole file (unreadable, not UTF-8)
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


class RoutesFileError(Exception):
    """A routes file was rejected; ``problems`` lists every problem found, in line order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("RoutesFileError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def file(self) -> str:
        return self.problems[0].file

    @property
    def line(self) -> int:
        return self.problems[0].line


class VersionStoreError(Exception):
    """Base of the errors of the Redis version store."""


class SwitchNotConfirmed(VersionStoreError):
    """The switch to a version was sent, or may have been, but Redis's answer was lost."""


class NoSuchVersion(VersionStoreError):
    """The version asked for is not (or no longer) kept in Redis."""


class NoCurrentVersion(VersionStoreError):
    """Redis holds no current version yet: run ``outbound-router seed FILE``."""


class CorruptVersion(VersionStoreError):
    """A stored version is incomplete or does not match its checksum."""
