"""The `compose` marker, registered here because pyproject.toml is not this suite's."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "compose: brings the docker-compose cluster up for real (opt-in: SOCKPOOL_COMPOSE_TEST=1, root, minutes)",
    )
