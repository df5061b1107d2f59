"""Who may import whom: the broker, the worker and the shared layers never
import the client (the socket layer lives in net/, shared by every side)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_broker_worker_net_and_protocol_import_nothing_from_the_client():
    offenders = {}
    for folder in ("broker", "worker", "net", "protocol"):
        for path in (ROOT / folder).rglob("*.py"):
            bad = {m for m in imported_modules(path) if m == "sockpool.client" or m.startswith("sockpool.client.")}
            if bad:
                offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders


def test_the_protocol_imports_no_other_part_of_sockpool():
    for path in (ROOT / "protocol").rglob("*.py"):
        others = {m for m in imported_modules(path) if m.startswith("sockpool.") and not m.startswith("sockpool.protocol")}
        assert not others, (path, others)
