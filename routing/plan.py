"""Choosing the attempts for a call (SPEC section 2).

``select`` is the deterministic part (matching, block, stoppers, tiers); ``plan`` adds the
weighted order and the trunk expansion with the randomness passed in, so that tests and
``explain`` are reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import NamedTuple

from routing import causes
from routing.errors import InvalidNumber
from routing.model import Carrier, Route
from routing.numbers import format_for_carrier, normalise
from routing.snapshot import MEMO_LIMIT, Snapshot


class Status(StrEnum):
    OK = "OK"
    NO_ROUTE = "NO_ROUTE"
    BLOCKED = "BLOCKED"
    INVALID = "INVALID"
    ERROR = "ERROR"


_CALLER_CAUSE = {
    Status.INVALID: causes.INVALID_NUMBER_FORMAT,
    Status.NO_ROUTE: causes.NO_ROUTE_DESTINATION,
    Status.BLOCKED: causes.CALL_REJECTED,
    Status.ERROR: causes.ROUTER_ERROR,
}


@dataclass(frozen=True, slots=True)
class Tier:
    priority: int
    routes: tuple[Route, ...]
    #: Sum of the routes' metrics, computed once (tiers are memoised; plans read it per call).
    total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", sum(r.metric for r in self.routes))

    def shares(self, tried: frozenset[str] = frozenset()) -> tuple[Fraction, ...]:
        """Exact probability of each route being the tier's first attempt, when the carriers
        in ``tried`` were attempted by earlier tiers (their routes are skipped: share 0)."""
        live = [r.metric if r.carrier not in tried else 0 for r in self.routes]
        total = sum(live)
        return tuple(Fraction(m, total) if total else Fraction(0) for m in live)


class Selection(NamedTuple):
    status: Status
    number: str | None
    tiers: tuple[Tier, ...] = ()
    blocked_by: Route | None = None
    reason: str = ""

    def _tried_before(self) -> Iterator[tuple[Tier, frozenset[str]]]:
        """Each tier, with the carriers every call has attempted before it: a later tier is
        only reached once every route of the earlier ones was expanded, so their carriers are
        skipped there (SPEC 2.6)."""
        tried: set[str] = set()
        for tier in self.tiers:
            yield tier, frozenset(tried)
            tried.update(r.carrier for r in tier.routes if r.carrier is not None)

    def shares(self, carriers: Mapping[str, Carrier],
               max_attempts: int) -> list[tuple[Fraction, ...]]:
        """Each tier's :meth:`Tier.shares`, its earlier tiers' carriers skipped; a tier the
        cut at ``max_attempts`` never reaches has no first attempt: share 0 for its routes."""
        result = []
        for (tier, tried), (before, _) in zip(self._tried_before(), self.attempts(carriers),
                                              strict=True):
            shares = tier.shares(tried)
            result.append(shares if before < max_attempts else tuple(Fraction(0) for _ in shares))
        return result

    def attempts(self, carriers: Mapping[str, Carrier]) -> list[tuple[int, int]]:
        """Per tier, before the cut at ``max_attempts``: the attempts every call makes before
        it, and its own (the trunks of its carriers no earlier tier tried)."""
        result = []
        before = 0
        for tier, tried in self._tried_before():
            new = {r.carrier for r in tier.routes if r.carrier is not None} - tried
            own = sum(len(carriers[c].trunks) for c in new)
            result.append((before, own))
            before += own
        return result


class Attempt(NamedTuple):
    """One trunk attempt (a NamedTuple: several are made per call, on the hot path)."""

    index: int  # type: ignore[assignment]  # 1-based; shadows tuple.index on purpose
    route: Route
    carrier: Carrier
    trunk: str
    dial_number: str
    setup_timeout: float
    ring_timeout: float

    @property
    def endpoint(self) -> str:
        """The PJSIP dial string: built only from validated parts."""
        return f"PJSIP/{self.dial_number}@{self.trunk}"


class Plan(NamedTuple):
    status: Status
    number: str | None
    attempts: tuple[Attempt, ...] = ()
    blocked_by: Route | None = None
    reason: str = ""

    @property
    def caller_cause(self) -> int:
        """The Q.850 cause to hang the caller up with when there is nothing to dial."""
        return _CALLER_CAUSE.get(self.status, 0)


def select(snapshot: Snapshot, digits: str, tenant: str | None = None) -> Selection:
    """Normalise, match, apply block and stoppers, and group into tiers (SPEC 2.1 to 2.4)."""
    try:
        number = normalise(digits, snapshot.defaults)
    except InvalidNumber as exc:
        return Selection(Status.INVALID, None, reason=exc.reason)
    tenant = tenant or None
    # Every prefix of the number present in the table is a prefix of the longest one: that
    # one, the regex hits and the tenant determine the matching routes, hence the selection.
    regex_hits = snapshot.regex_hits(number)
    key = (snapshot.longest_prefix(number), regex_hits, tenant)
    memo = snapshot.memo
    cached = memo.get(key)
    if cached is None:
        if len(memo) >= MEMO_LIMIT:
            memo.clear()
        routes = snapshot.routes_for(snapshot.prefix_hits(number), regex_hits, tenant)
        cached = memo[key] = _select(routes)
    status, tiers, blocked_by, reason = cached
    return Selection(status, number, tiers, blocked_by, reason)


def _select(routes: list[Route]) -> tuple[Status, tuple[Tier, ...], Route | None, str]:
    """Block, stoppers and tiers for the routes that match (SPEC 2.3 and 2.4)."""
    if not routes:
        return Status.NO_ROUTE, (), None, "no route matches"
    for route in routes:
        if route.block:
            return Status.BLOCKED, (), route, f"blocked by route {route.name}"
    stop_at = min((r.priority for r in routes if r.stopper), default=None)
    if stop_at is not None:
        routes = [r for r in routes if r.priority <= stop_at]
    by_priority: dict[int, list[Route]] = {}
    for route in routes:
        by_priority.setdefault(route.priority, []).append(route)
    tiers = tuple(Tier(p, tuple(by_priority[p])) for p in sorted(by_priority))
    return Status.OK, tiers, None, ""


_FLOAT_EXACT = 2**53


def weighted_order(routes: tuple[Route, ...], rng: random.Random,
                   total: int | None = None) -> list[Route]:
    """Exact weighted sampling without replacement on ``metric`` (SPEC 2.5)."""
    if len(routes) == 1:
        return [routes[0]]
    remaining = list(routes)
    if total is None:
        total = sum(r.metric for r in remaining)
    ordered: list[Route] = []
    random_ = rng.random
    while len(remaining) > 1:
        # A float holds a total below 2**53 exactly; a bigger one (metrics of a generated
        # file) would lose exactness, and past 1e308 raise: an integer draw then.
        point = random_() * total if total < _FLOAT_EXACT else rng.randrange(total)
        chosen = len(remaining) - 1  # if rounding leaves point a hair above 0: the last one
        for i, route in enumerate(remaining):
            point -= route.metric
            if point < 0:
                chosen = i
                break
        route = remaining.pop(chosen)
        ordered.append(route)
        total -= route.metric
    ordered.append(remaining[0])
    return ordered


def plan(snapshot: Snapshot, digits: str, tenant: str | None = None, *,
         rng: random.Random) -> Plan:
    """The ordered trunk attempts for a call (SPEC section 2)."""
    selection = select(snapshot, digits, tenant)
    if selection.status is not Status.OK:
        return Plan(selection.status, selection.number, blocked_by=selection.blocked_by,
                    reason=selection.reason)
    number = selection.number
    assert number is not None
    defaults = snapshot.defaults
    carriers = snapshot.carriers
    limit = defaults.max_attempts
    attempts: list[Attempt] = []
    tried: set[str] = set()
    for tier in selection.tiers:
        for route in weighted_order(tier.routes, rng, tier.total):
            carrier_name = route.carrier
            if carrier_name is None or carrier_name in tried:
                continue
            tried.add(carrier_name)
            carrier = carriers[carrier_name]
            dial_number = format_for_carrier(number, carrier, defaults)
            trunks = carrier.trunks
            if len(trunks) == 2:
                if rng.random() < 0.5:
                    trunks = (trunks[1], trunks[0])
            elif len(trunks) > 2:
                shuffled = list(trunks)
                rng.shuffle(shuffled)
                trunks = tuple(shuffled)
            for trunk in trunks:
                attempts.append(Attempt(len(attempts) + 1, route, carrier, trunk, dial_number,
                                        defaults.setup_timeout, defaults.ring_timeout))
                if len(attempts) >= limit:
                    return Plan(Status.OK, number, tuple(attempts))
    if not attempts:
        return Plan(Status.NO_ROUTE, number, reason="no carrier left to try")
    return Plan(Status.OK, number, tuple(attempts))
