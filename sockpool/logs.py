"""Logging set-up shared by the three commands."""

from __future__ import annotations

import logging

import click

LOG_LEVELS = ["debug", "info", "warning", "error"]

log_level_option = click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="How much to log to stderr.",
)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
