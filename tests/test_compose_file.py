"""docker-compose.yml and the Dockerfile, checked offline: no engine, no network.

The compose file is validated against the compose specification's schema
that check-jsonschema ships, then held to what the cluster relies on: a
`broker` and a scalable `worker` service that `submit` can run in. Bringing
the cluster up for real is tests/compose/ (opt-in).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
BROKER_ADDRESS = "broker:7341"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("ruamel.yaml", reason="ruamel.yaml comes with check-jsonschema (the test extra)")
    return yaml.YAML(typ="safe", pure=True).load(COMPOSE_FILE.read_text())  # type: ignore[no-any-return]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, written as a map or as a list of NAME=VALUE."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def test_compose_file_matches_the_compose_spec() -> None:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is in the test extra")
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_services_are_broker_and_worker(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"broker", "worker"}


def test_broker_listens_on_every_interface(compose: dict[str, Any]) -> None:
    command = compose["services"]["broker"]["command"]
    assert command == ["broker", "start", "--host", "0.0.0.0", "--port", "7341"]


def test_worker_joins_the_broker_and_submit_finds_it(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["command"] == ["worker", "join", BROKER_ADDRESS]
    # `docker compose run --rm worker submit ...` relies on this.
    assert environment(worker).get("SOCKPOOL_BROKER") == BROKER_ADDRESS


def test_worker_can_scale(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_every_service_builds_on_base_image(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service["build"]["args"]["BASE_IMAGE"] == "${BASE_IMAGE:-python:3.12-slim}", name
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name


def test_dockerfile_declares_base_image_before_from() -> None:
    instructions = dockerfile_instructions()
    first_from = next(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    assert ("ARG", "BASE_IMAGE=python:3.12-slim") in instructions[:first_from]
    stages: set[str] = set()
    for keyword, args in instructions:
        if keyword == "FROM":
            image, *alias = args.split()
            assert image == "${BASE_IMAGE}" or image in stages, f"FROM {args} ignores BASE_IMAGE"
            if alias:
                stages.add(alias[-1])


def test_dockerfile_uses_a_venv_made_by_python3() -> None:
    # The debootstrapped base has python3 but no `python`.
    runs = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "RUN")
    assert "python3 -m venv" in runs
    assert not re.search(r"(^|[\s;&|])python\s", runs), "the debootstrapped base image has no `python`"
