"""`broker start`, `broker failed`: run a broker, or ask one what failed."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from client.logs import configure_logging, log_level_option
from protocol.defaults import BROKER_ENV, DEFAULT_HOST, DEFAULT_PORT, HEARTBEAT_S, MAX_FRAME_BYTES, RESULT_TTL_S

from .server import BrokerServer
from .store import DataDirBusy, Store, default_data_dir


@click.group()
def main() -> None:
    """The sockpool broker."""


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="TCP port; 0 picks a free one.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where jobs and results are kept [default: ~/.local/share/sockpool/broker-PORT].",
)
@click.option("--in-memory", is_flag=True, help="Keep nothing on disk: a restart loses queued jobs.")
@click.option("--fsync", is_flag=True, help="fsync every commit, to survive a power cut, not only a crash.")
@click.option(
    "--max-frame-bytes", default=MAX_FRAME_BYTES, show_default=True, type=click.IntRange(1024),
    help="Largest frame accepted from a peer.",
)
@click.option("--heartbeat-s", default=HEARTBEAT_S, show_default=True, type=click.FloatRange(0.05),
              help="Heartbeat interval; a peer silent for 4 intervals is dropped and its jobs requeued.")
@click.option("--result-ttl-s", default=RESULT_TTL_S, show_default=True, type=click.FloatRange(1),
              help="How long unacknowledged results and failed jobs are kept.")
@click.option("--name", default=None, help="Name shown to peers and in logs.")
@log_level_option
def start(
    host: str, port: int, data_dir: Path | None, in_memory: bool, fsync: bool, max_frame_bytes: int,
    heartbeat_s: float, result_ttl_s: float, name: str | None, log_level: str,
) -> None:
    """Start a broker. It prints 'listening on HOST:PORT' once it accepts connections."""
    configure_logging(log_level)
    store = None
    if not in_memory:
        if data_dir is None and port == 0:
            raise click.UsageError("--port 0 needs --data-dir or --in-memory: the default data dir is per port")
        try:
            store = Store(data_dir or default_data_dir(port), fsync=fsync)
        except DataDirBusy as exc:
            raise click.ClickException(str(exc)) from exc
    server = BrokerServer(
        host, port, max_frame_bytes=max_frame_bytes, name=name, store=store,
        heartbeat_s=heartbeat_s, result_ttl_s=result_ttl_s,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop())
    click.echo(f"listening on {server.address}")
    sys.stdout.flush()
    server.serve_forever()
    server.stop()


@main.command()
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help=f"Broker address [env: {BROKER_ENV}].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def failed(address: str | None, as_json: bool) -> None:
    """List the jobs that failed for good (kept until their TTL)."""
    from client import Client, SockpoolError

    try:
        with Client(address) as client:
            jobs = client.failed_jobs()
    except SockpoolError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(jobs))
        return
    for job in jobs:
        error = job["error"] if isinstance(job["error"], dict) else {"message": job["error"]}
        click.echo(f"{job['task']}{tuple(job['args'])}: {error.get('type', 'Error')}: {error.get('message', '')}"
                   f" (after {job['attempts']} attempts)")
    click.echo(f"{len(jobs)} failed jobs", err=True)
