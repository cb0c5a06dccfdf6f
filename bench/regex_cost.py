"""What `validate` counts for a target pattern's regex, against what Python's re then spends.

    .venv/bin/python bench/regex_cost.py [REGEX...]

For each regex (a built-in list when none is given): the ways of matching that
redis_seed/regex_cost.py counts for the worst number it finds, that number, the time
``re.search`` takes on it (the slowest of 3 runs; skipped past 2 * 10**8 ways), the nanoseconds
per way counted, and whether `validate` would accept it (MAX_PATHS). The count is what the
limit is set on: it is the same on every machine, the time is not. No assertions: figures only.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis_seed.regex_cost import MAX_PATHS, regex_cost  # noqa: E402

REGEXES = [
    r"^\+3490[0-9]{6}$",                 # SPEC's premium pattern
    r"^\+34(80[36]|90[57])[0-9]{6}$",
    r"^\+34\d?\d?\d?\d?\d?\d*$",
    r"34\d+$",
    r"^\+(\d|\d\d)+x",
    r"^\+(12|1|2)*3",
    r"^\+(1|11|2)*3",
    r"\d*\d*\d*\d*\d*x",
    r"\d*\d*\d*\d*\d*\d*x",
    r"^\+(1|11|\d)*2",
    r"(1|11|111|\d)+x",
    r"^\+(1|11|\d|[0-9])*2",
    r"^\+(1|11|111|1111|\d|[0-9])*2",
]
MEASURED_UP_TO = 2 * 10**8


def main(argv: list[str]) -> int:
    print(f"{'regex':36} {'ways':>13} {'worst number':18} {'re.search':>11} {'ns/way':>7}  "
          f"validate (at most {MAX_PATHS:,})")
    for regex in argv or REGEXES:
        cost = regex_cost(regex)
        if cost.paths is None:
            print(f"{regex:36} {'not judged':>13}")
            continue
        number = cost.worst or "+" + "1" * 15
        seconds = None
        if cost.paths <= MEASURED_UP_TO:
            compiled = re.compile(regex)
            runs = []
            for _ in range(3):
                start = time.perf_counter()
                compiled.search(number)
                runs.append(time.perf_counter() - start)
            seconds = max(runs)
        shown = f"{seconds * 1000:9.3f}ms" if seconds is not None else f"{'-':>11}"
        per_way = f"{seconds * 1e9 / cost.paths:7.1f}" if seconds is not None else f"{'-':>7}"
        verdict = "refused" if cost.too_slow or cost.can_match is False else "accepted"
        if cost.can_match is False:
            verdict += " (never matches)"
        print(f"{regex:36} {cost.paths:13,} {number:18} {shown} {per_way}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
