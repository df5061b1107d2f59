"""`broker start`: run a broker until SIGTERM or Ctrl-C. `broker status`: look at one."""

from __future__ import annotations

import json
import signal
import sys

import click

from client.envvars import CONTEXT_SETTINGS, show_envvars
from client.logs import configure_logging, log_level_option
from protocol import SockpoolError
from protocol.defaults import BROKER_ENV, CONNECT_TIMEOUT_S, DEFAULT_HOST, DEFAULT_PORT, MAX_FRAME_BYTES

from .server import BrokerServer


@click.group(context_settings=CONTEXT_SETTINGS)
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
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), default=None,
    help="Serve Prometheus /metrics and the dashboard on this HTTP port of --host; 0 picks a free one.",
)
@log_level_option
def start(host: str, port: int, max_frame_bytes: int, name: str | None, metrics_port: int | None, log_level: str) -> None:
    """Start a broker. It prints 'listening on HOST:PORT' once it accepts
    connections, then 'metrics on HOST:PORT' if it serves metrics."""
    configure_logging(log_level)
    server = BrokerServer(host, port, max_frame_bytes=max_frame_bytes, name=name)
    http = None
    if metrics_port is not None:
        from .observe import ObserveServer  # only a broker asked for metrics needs prometheus-client

        try:
            http = ObserveServer(host, metrics_port, server.status)
        except OSError as exc:
            server.stop()
            raise click.ClickException(f"cannot serve metrics on {host}:{metrics_port}: {exc}") from exc

    def stop(*_: object) -> None:
        server.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    click.echo(f"listening on {server.address}")
    if http is not None:
        http.start()
        click.echo(f"metrics on {http.address}")
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        if http is not None:
            http.stop()


@main.command()
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help="Broker address.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=CONNECT_TIMEOUT_S, show_default=True,
              help="Seconds to wait for the broker.")
def status(address: str | None, as_json: bool, timeout: float) -> None:
    """Show a broker's workers, queue depth, totals, throughput and counts per task.

    Asks the broker over the protocol, as a client. Counts are calls: a map
    chunk of N items counts N.
    """
    from client import Client

    from .report import format_status

    try:
        with Client(address, name="broker-status", connect_timeout_s=timeout) as client:
            report = client.status(timeout)
    except (SockpoolError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report, indent=2) if as_json else format_status(report))


show_envvars(main)
