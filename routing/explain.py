"""``explain``: the routing decision for a number, without placing a call (SPEC section 6)."""

from __future__ import annotations

from typing import Any

from routing.plan import Selection, Status, select
from routing.snapshot import Snapshot


def explain(snapshot: Snapshot, digits: str, tenant: str | None = None) -> dict[str, Any]:
    """The decision as the JSON object of SPEC section 6 (``share`` exact, as a float)."""
    selection = select(snapshot, digits, tenant)
    return to_json(selection, snapshot)


def to_json(selection: Selection, snapshot: Snapshot) -> dict[str, Any]:
    """Exactly SPEC's object: ``status``, ``number`` (None when INVALID) and ``tiers``. Why a
    call is refused and the routes version are in the text rendering (:func:`to_text`)."""
    return {
        "status": str(selection.status),
        "number": selection.number,
        "tiers": [
            {
                "priority": tier.priority,
                "routes": [
                    {
                        "route": route.name,
                        "carrier": route.carrier,
                        "metric": route.metric,
                        "share": float(share),
                    }
                    for route, share in zip(tier.routes, shares, strict=True)
                ],
            }
            for tier, shares in zip(
                selection.tiers,
                selection.shares(snapshot.carriers, snapshot.defaults.max_attempts),
                strict=True,
            )
        ],
    }


def to_text(selection: Selection, snapshot: Snapshot, digits: str,
            tenant: str | None = None) -> str:
    """A human-readable rendering of the same decision."""
    who = f" (tenant {tenant})" if tenant else ""
    lines = [f"{digits}{who} -> {selection.number or '-'}: {selection.status}"
             + (f" ({selection.reason})" if selection.reason and
                selection.status is not Status.OK else "")]
    if selection.status is Status.OK:
        defaults = snapshot.defaults
        limit = defaults.max_attempts
        earlier: set[str] = set()  # the carriers of the tiers before: not attempted again
        for tier, shares, (before, own) in zip(selection.tiers,
                                               selection.shares(snapshot.carriers, limit),
                                               selection.attempts(snapshot.carriers),
                                               strict=True):
            if before >= limit:
                note = f" never reached: the tiers before it use up max_attempts ({limit})"
            elif before + own > limit:
                note = f" cut at max_attempts ({limit}): {limit - before} of its {own} attempts"
            else:
                note = ""
            lines.append(f"  priority {tier.priority}:{note}")
            for route, share in zip(tier.routes, shares, strict=True):
                carrier = snapshot.carriers[route.carrier] if route.carrier else None
                trunks = ", ".join(carrier.trunks) if carrier else "-"
                lines.append(
                    f"    {route.name:<24} carrier {route.carrier:<16} metric {route.metric:<4}"
                    f" share {float(share):6.1%}  trunks: {trunks}"
                    + ("  (its carrier is tried in a tier before: never here)"
                       if route.carrier in earlier else "")
                )
            earlier.update(r.carrier for r in tier.routes if r.carrier)
        lines.append(f"  max_attempts {defaults.max_attempts}, setup_timeout "
                     f"{defaults.setup_timeout:g}s, ring_timeout {defaults.ring_timeout:g}s")
    lines.append(f"  routes version {snapshot.version}")
    return "\n".join(lines)
