"""docker-compose.ha.yml (two brokers on one PostgreSQL), checked offline:
the compose specification's schema, and what failover relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.ha.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("ruamel.yaml", reason="ruamel.yaml comes with check-jsonschema (the test extra)")
    return yaml.YAML(typ="safe", pure=True).load(COMPOSE_FILE.read_text())  # type: ignore[no-any-return]


def test_matches_the_compose_spec() -> None:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is in the test extra")
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_two_brokers_on_one_store_each_advertising_itself(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "broker1", "broker2", "worker"} <= set(services)
    stores = set()
    for name in ("broker1", "broker2"):
        command = services[name]["command"]
        assert command[:2] == ["broker", "start"]
        assert command[command.index("--host") + 1] == "0.0.0.0"
        assert command[command.index("--advertise") + 1] == f"{name}:7341"
        stores.add(command[command.index("--store") + 1])
        assert services[name]["build"]["args"]["EXTRAS"] == "postgres"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        # Published on loopback only.
        assert all(str(p).startswith("127.0.0.1:") for p in services[name]["ports"])
    assert len(stores) == 1 and next(iter(stores)).startswith("postgresql://")


def test_workers_and_submit_get_both_addresses(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["environment"]["SOCKPOOL_BROKER"] == "broker1:7341,broker2:7341"
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N


def test_the_database_is_not_published(compose: dict[str, Any]) -> None:
    assert "ports" not in compose["services"]["postgres"]
