"""Every ROUTER_* channel variable name, in one place (as wazo-agid's dialplan_variables.py)."""

from __future__ import annotations

# Set by the FastAGI ``route`` script (SPEC section 4).
STATUS = "ROUTER_STATUS"  # OK, NO_ROUTE, BLOCKED, INVALID, ERROR
NUMBER = "ROUTER_NUMBER"  # the E.164 number
COUNT = "ROUTER_COUNT"  # how many attempts
CALLER_CAUSE = "ROUTER_CAUSE"  # Q.850 cause to hang the caller up with when not OK

# Set by the FastAGI ``outcome`` script after a failed attempt.
NEXT = "ROUTER_NEXT"  # 1: try the next attempt, 0: stop
HANGUP_CAUSE = "ROUTER_HANGUP_CAUSE"  # cause to hang the caller up with when stopping

# The call's outcome, for the CDR (both paths).
CARRIER = "ROUTER_CARRIER"  # carrier that answered
TRUNK = "ROUTER_TRUNK"  # trunk that answered
ATTEMPTS = "ROUTER_ATTEMPTS"  # compact trace of every attempt, see routing.trace
VERSION = "ROUTER_VERSION"  # routing table version the call was routed with


def dial(n: int) -> str:
    """A ready Dial() string for attempt n (1-based)."""
    return f"ROUTER_DIAL_{n}"


def carrier(n: int) -> str:
    return f"ROUTER_CARRIER_{n}"


def trunk(n: int) -> str:
    return f"ROUTER_TRUNK_{n}"


def timeout(n: int) -> str:
    """Dial's timeout argument for attempt n: ``RING^SETUP`` in seconds, e.g. ``30^5``."""
    return f"ROUTER_TIMEOUT_{n}"


def result(n: int) -> str:
    """Outcome of attempt n as recorded by the ``outcome`` script (``outcome:cause``)."""
    return f"ROUTER_RESULT_{n}"
