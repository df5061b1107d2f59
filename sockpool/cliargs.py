"""How the commands read a job's arguments from the command line."""

from __future__ import annotations

import json
from typing import Any


def parse_arg(text: str) -> Any:
    """A JSON literal where the text parses as one (`3`, `2.5`, `[1, 2]`), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text
