"""Every ROUTER_* channel variable name, in one place (as wazo-agid's dialplan_variables.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from routing.model import FailoverPolicy
from routing.numbers import all_digits

# Set by the FastAGI ``route`` script (SPEC section 4).
STATUS = "ROUTER_STATUS"  # OK, NO_ROUTE, BLOCKED, INVALID, ERROR
NUMBER = "ROUTER_NUMBER"  # the E.164 number
COUNT = "ROUTER_COUNT"  # how many attempts
CALLER_CAUSE = "ROUTER_CAUSE"  # Q.850 cause to hang the caller up with when not OK

# Set by the FastAGI ``outcome`` script after a failed attempt.
NEXT = "ROUTER_NEXT"  # 1: try the next attempt, 0: stop
HANGUP_CAUSE = "ROUTER_HANGUP_CAUSE"  # cause to hang the caller up with when stopping
LAST_ATTEMPT = "ROUTER_LAST_ATTEMPT"  # its trace entry: the dialplan appends it to ATTEMPTS

# The call's outcome, for the CDR (both paths).
CARRIER = "ROUTER_CARRIER"  # carrier that answered
TRUNK = "ROUTER_TRUNK"  # trunk that answered
ATTEMPTS = "ROUTER_ATTEMPTS"  # compact trace of every attempt, see routing.trace
VERSION = "ROUTER_VERSION"  # routing table version the call was routed with
#: Set by the FastAGI dialplan before and after each failed Dial(): Asterisk's clock in
#: milliseconds (``${STRFTIME(,,%s%3q)}``). The ``outcome`` script reads them only to tell a
#: carrier's own 487 from the one that answers the CANCEL of Dial's ^SETUP timer.
DIAL_START = "ROUTER_DIAL_START"
DIAL_END = "ROUTER_DIAL_END"
#: Set by the FastAGI dialplan before each Dial(): ``${HANGUPCAUSE}`` then. A BUSY or
#: CONGESTION with no final SIP code renewed it only when it changed (Dial's ``i`` option
#: reports a carrier's 3xx as BUSY and leaves the cause of an earlier attempt there).
CAUSE_BEFORE = "ROUTER_CAUSE_BEFORE"

# On an ARI attempt channel: what a restarted ARI app needs to resume the call (JSON).
RESUME = "ROUTER_RESUME"
#: Also set on an ARI attempt channel when it is created, to "1": no CDR of its own. The
#: caller's CDR has a record per attempt (dstchannel: the attempt); an attempt channel the
#: app created had one of its own besides when its carrier failed before it had joined the
#: call's bridge (``"", "s", PJSIP/carrier-b-..., FAILED``: about 1 call in 450 on the lab).
NO_CDR = "CDR_PROP(disable)"

# On the ARI caller, channel only, written with each attempt: ROUTER_ATTEMPTS as it must read
# if the caller hangs up during that attempt (the attempt "cancelled"). A caller who hangs up
# has left Stasis before the app hears of it, so the app can no longer write that; the
# dialplan's h extension puts this on the CDR when it has more entries than ROUTER_ATTEMPTS,
# that is, when the app did not get to write the attempt's outcome. (So the outcome write need
# not empty it: every variable set is a Stasis message Asterisk turns into JSON. Only a call
# the router ends on an error, with no outcome written, gets it set to the trace so far.)
ATTEMPTS_ABANDONED = "ROUTER_ATTEMPTS_ABANDONED"
# On the ARI caller, channel only, written with each attempt: that attempt's carrier. When the
# carrier answered while no instance of the app listened (stopped, restarting, stalled),
# Asterisk answered the caller through the call's bridge by itself; should the caller hang up
# before an instance writes the outcome, the h extension writes it (the record is ANSWERED):
# this carrier, the attempt's trunk, and the attempt "answered" instead of "cancelled".
ATTEMPT_CARRIER = "ROUTER_ATTEMPT_CARRIER"


#: What the CDR gets: channel variables are not copied into CDRs (Asterisk 12+), so these are
#: also written as CDR variables, ``CDR(ROUTER_STATUS)`` and so on (:func:`with_cdr`).
CDR_VARIABLES = frozenset({STATUS, NUMBER, CARRIER, TRUNK, ATTEMPTS, VERSION})


def cdr(name: str) -> str:
    """The CDR variable of the same name, as a writable function: ``CDR(ROUTER_STATUS)``."""
    return f"CDR({name})"


def with_cdr(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` and, for those of :data:`CDR_VARIABLES`, the same on the CDR."""
    return {**values, **{cdr(k): v for k, v in values.items() if k in CDR_VARIABLES}}


def dial(n: int) -> str:
    """A ready Dial() string for attempt n (1-based)."""
    return f"ROUTER_DIAL_{n}"


def carrier(n: int) -> str:
    return f"ROUTER_CARRIER_{n}"


def trunk(n: int) -> str:
    return f"ROUTER_TRUNK_{n}"


def timeout(n: int) -> str:
    """The ring timeout of attempt n in seconds, e.g. ``30`` (Dial's timeout)."""
    return f"ROUTER_TIMEOUT_{n}"


def setup_timeout(n: int) -> str:
    """The setup timeout of attempt n in seconds, e.g. ``5``: the dialplan gives Dial
    ``${ROUTER_TIMEOUT_n}^${ROUTER_SETUP_TIMEOUT_n}``."""
    return f"ROUTER_SETUP_TIMEOUT_{n}"


def failover(n: int) -> str:
    """The outcome policy of attempt n's carrier, as :func:`format_failover` writes it: the
    ``outcome`` script judges the attempt by the policy of the version the call was routed
    with, not by the one current when the attempt ends."""
    return f"ROUTER_FAILOVER_{n}"


def format_failover(policy: FailoverPolicy) -> str:
    """``""`` for the default policy, else e.g. ``retry=480/487 stop=503
    retry_after_early_media=no`` (no comma: one value of an ``ARRAY()`` assignment)."""
    parts = [f"{key}={'/'.join(map(str, sorted(codes)))}"
             for key, codes in (("retry", policy.retry), ("stop", policy.stop)) if codes]
    if not policy.retry_after_early_media:
        parts.append("retry_after_early_media=no")
    return " ".join(parts)


def parse_failover(text: str) -> FailoverPolicy:
    """What :func:`format_failover` wrote, back; ValueError for anything else."""
    fields: dict[str, str] = {}
    for part in text.split():
        key, sep, value = part.partition("=")
        if not sep or key in fields or key not in ("retry", "stop", "retry_after_early_media"):
            raise ValueError(f"not a failover policy: {text!r}")
        fields[key] = value
    early = fields.get("retry_after_early_media", "yes")
    if early not in ("yes", "no"):
        raise ValueError(f"not a failover policy: {text!r}")

    def codes(key: str) -> frozenset[int]:
        values = fields.get(key)
        if values is None:
            return frozenset()
        if not all(map(all_digits, values.split("/"))):
            raise ValueError(f"not a failover policy: {text!r}")
        return frozenset(map(int, values.split("/")))

    return FailoverPolicy(retry=codes("retry"), stop=codes("stop"),
                          retry_after_early_media=early == "yes")


def result(n: int) -> str:
    """Outcome of attempt n as recorded by the ``outcome`` script (``outcome:cause``)."""
    return f"ROUTER_RESULT_{n}"


#: Characters Asterisk's argument splitter (``ast_app_separate_args``) treats specially.
_ARG_SPECIAL = str.maketrans({c: "\\" + c for c in '\\",()[]'})
_HAS_ARG_SPECIAL = re.compile(r'[\\",()\[\]]')
#: A plain channel variable name, or such a name in ``CDR()``.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+|CDR\([A-Za-z0-9_]+\)")


def assignment(values: Mapping[str, str]) -> tuple[str, str]:
    """The one ``(name, value)`` that sets all of ``values`` in Asterisk (ARI's
    ``POST .../variable``, AGI's ``SET VARIABLE``): the pair itself for one variable, else
    ``ARRAY()`` (:func:`array_assignment`)."""
    if len(values) == 1:
        [pair] = values.items()
        return pair
    return array_assignment(values)


def array_assignment(values: Mapping[str, str]) -> tuple[str, str]:
    """``{"A": "1", "B": "x,y"}`` -> ``("ARRAY(A,B)", "1,x\\,y")``: what ``Set(ARRAY(...)=...)``
    takes. Every value is backslash-escaped, so no comma, quote, bracket or parenthesis in it
    can move a value to the wrong variable; names must be plain variable names, or such a
    name in ``CDR()``."""
    # On the per-call path: one compiled match per name, values escaped only when needed
    # (most, dial strings and numbers, have nothing to escape).
    if not all(map(_PLAIN_NAME.fullmatch, values)):
        bad = next(n for n in values if _PLAIN_NAME.fullmatch(n) is None)
        raise ValueError(f"not a plain channel variable name: {bad!r}")
    return (
        f"ARRAY({','.join(values)})",
        ",".join(value.translate(_ARG_SPECIAL) if _HAS_ARG_SPECIAL.search(value) else value
                 for value in values.values()),
    )
