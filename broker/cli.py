"""`broker start`: run a broker in the foreground until SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import sys

import click

from client.logs import configure_logging, log_level_option
from protocol.defaults import DEFAULT_HOST, DEFAULT_PORT, MAX_FRAME_BYTES

from .server import BrokerServer


@click.group()
def main() -> None:
    """The sockpool broker."""


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="TCP port; 0 picks a free one.")
@click.option(
    "--max-frame-bytes", default=MAX_FRAME_BYTES, show_default=True, type=click.IntRange(1024),
    help="Largest frame accepted from a peer.",
)
@click.option("--name", default=None, help="Name shown to peers and in logs.")
@log_level_option
def start(host: str, port: int, max_frame_bytes: int, name: str | None, log_level: str) -> None:
    """Start a broker. It prints 'listening on HOST:PORT' once it accepts connections."""
    configure_logging(log_level)
    server = BrokerServer(host, port, max_frame_bytes=max_frame_bytes, name=name)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop())
    click.echo(f"listening on {server.address}")
    sys.stdout.flush()
    server.serve_forever()
