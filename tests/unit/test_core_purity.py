"""The routing core imports no I/O library (STYLE: a pure core)."""

from __future__ import annotations

import ast
from pathlib import Path

import routing

FORBIDDEN = {"asyncio", "redis", "aiohttp", "yaml", "socket", "subprocess", "requests",
             "http", "urllib", "os", "threading", "time"}


def test_routing_core_imports_no_io_library() -> None:
    package = Path(routing.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):  # subpackages too
        where = path.relative_to(package)
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in FORBIDDEN:
                    offenders.append(f"{where}: import {name}")
                elif top not in {"routing", "__future__"} and top not in _STDLIB_PURE:
                    offenders.append(f"{where}: import {name} (not known to be pure)")
    assert offenders == []


_STDLIB_PURE = {"collections", "dataclasses", "enum", "fractions", "random", "re", "typing",
                "functools", "itertools", "math", "bisect", "heapq", "operator"}
