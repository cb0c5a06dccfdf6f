"""The core's exceptions: each says what went wrong."""

from __future__ import annotations


class RoutingError(Exception):
    """Base class of the routing core's errors."""


class InvalidNumber(RoutingError):
    """The dialled string cannot be normalised to E.164; it must never reach a dial string."""

    def __init__(self, digits: str, reason: str) -> None:
        super().__init__(f"invalid number {digits!r}: {reason}")
        self.digits = digits
        self.reason = reason
