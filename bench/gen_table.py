"""A realistic large routing table for the benchmarks.

Every country code, area and mobile ranges below them up to ``n_prefixes`` E.164 prefixes;
each country is a target-pattern group routed over 3 tiers (2 carriers load-balanced at
priority 1, one at 2, one at 3), and every prefix has a route of its own as well (a
destination-specific carrier at priority 1), so a number matches several routes.
"""

from __future__ import annotations

import random

from routing.model import Carrier, Defaults, Route, RoutingTable, TargetPattern

# ITU-T E.164 country codes (assigned, geographic and most non-geographic).
COUNTRY_CODES = (
    "1 7 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 "
    "62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98 211 212 213 216 218 220 221 222 223 224 "
    "225 226 227 228 229 230 231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246 "
    "248 249 250 251 252 253 254 255 256 257 258 260 261 262 263 264 265 266 267 268 269 290 "
    "291 297 298 299 350 351 352 353 354 355 356 357 358 359 370 371 372 373 374 375 376 377 "
    "378 380 381 382 383 385 386 387 389 420 421 423 500 501 502 503 504 505 506 507 508 509 "
    "590 591 592 593 594 595 596 597 598 599 670 672 673 674 675 676 677 678 679 680 681 682 "
    "683 685 686 687 688 689 690 691 692 850 852 853 855 856 880 886 960 961 962 963 964 965 "
    "966 967 968 970 971 972 973 974 975 976 977 992 993 994 995 996 998"
).split()

CARRIERS = ("peering", "cheapvoip", "premiumvoice", "backup", "wholesale-1", "wholesale-2",
            "wholesale-3", "wholesale-4")


def make_prefixes(n_prefixes: int, rng: random.Random) -> list[str]:
    prefixes: set[str] = set()
    per_country = n_prefixes // len(COUNTRY_CODES) + 1
    for cc in COUNTRY_CODES:
        mine = {"+" + cc}
        # area codes and mobile ranges (1 to 5 more digits) under the country code
        while len(mine) < per_country:
            length = rng.choice((1, 2, 2, 3, 3, 4, 4, 5))
            mine.add("+" + cc + "".join(rng.choice("0123456789") for _ in range(length)))
        prefixes |= mine
    return sorted(prefixes)[:n_prefixes]


def make_table(n_prefixes: int = 100_000, seed: int = 1) -> RoutingTable:
    rng = random.Random(seed)
    prefixes = make_prefixes(n_prefixes, rng)
    carriers = {
        name: Carrier(name, (f"{name}-1", f"{name}-2")) for name in CARRIERS
    }
    patterns: dict[str, TargetPattern] = {}
    groups: dict[str, list[str]] = {}
    routes: list[Route] = []
    for i, prefix in enumerate(prefixes):
        name = f"p{i}"
        patterns[name] = TargetPattern(name, prefix=prefix)
        cc = next(c for c in (prefix[1:4], prefix[1:3], prefix[1:2]) if c in _CC_SET)
        groups.setdefault(f"cc{cc}", []).append(name)
        if prefix[1:] != cc:
            routes.append(Route(f"r-{name}", priority=1, pattern=name,
                                carrier=CARRIERS[4 + i % 4], metric=rng.randint(1, 5)))
    for group in groups:
        a, b, c, d = rng.sample(CARRIERS[:4], 4)
        routes += [
            Route(f"{group}-{a}", priority=1, group=group, carrier=a, metric=1),
            Route(f"{group}-{b}", priority=1, group=group, carrier=b, metric=2),
            Route(f"{group}-{c}", priority=2, group=group, carrier=c, metric=1),
            Route(f"{group}-{d}", priority=3, group=group, carrier=d, metric=1),
        ]
    return RoutingTable(Defaults(), carriers, patterns,
                        {g: tuple(m) for g, m in groups.items()}, tuple(routes))


_CC_SET = frozenset(COUNTRY_CODES)


def sample_numbers(table: RoutingTable, count: int, seed: int = 2) -> list[str]:
    """Dialable numbers under random prefixes of the table (national-length tails)."""
    rng = random.Random(seed)
    prefixes = [p.prefix for p in table.patterns.values() if p.prefix]
    out = []
    for _ in range(count):
        p = rng.choice(prefixes)
        tail = 12 - len(p) + 1
        out.append(p + "".join(rng.choice("0123456789") for _ in range(max(tail, 1))))
    return out
