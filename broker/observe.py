"""The broker's HTTP side: Prometheus metrics, a live dashboard, JSON status.

    GET /             the dashboard (broker/dashboard.html; no external assets)
    GET /api/status   BrokerState.status as JSON, which the dashboard polls
    GET /metrics      Prometheus text format, made by prometheus-client

Every request reads one status snapshot, taken under the broker's lock by
`BrokerServer.status`, and builds its answer from that outside the lock:
a scrape never sees counts from two different moments, and never holds
the lock while it formats or writes. The metrics are custom collectors
over that snapshot, so nothing here keeps counts of its own.

This port has no authentication: it binds the broker's host, and shows
counts, worker and task names, and recent failures by type, task and
worker: never a failure's message (which may quote a job's arguments),
never job arguments or results.

What a stranger on this port can cost is bounded, and never touches the
broker port:
1. At most MAX_HTTP_CONNECTIONS at once, a thread each; more are closed at
   once. Every connection has HTTP_TIMEOUT_S per read and
   HTTP_DEADLINE_S in all, so idle or trickling connections are cut.
2. A request whose `Host` header names anything but an IP address,
   localhost or this machine's own name is refused (421): a page on a
   DNS-rebinding domain cannot read /api/status through a browser.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from sockpool.net.connection import address_family, join_address

log = logging.getLogger("sockpool.broker.http")

MAX_HTTP_CONNECTIONS = 16
HTTP_TIMEOUT_S = 5.0
HTTP_DEADLINE_S = 15.0

StatusSource = Callable[[], dict[str, Any]]


class StatusCollector:
    """Prometheus metrics read from one broker status snapshot per scrape."""

    def __init__(self, status: StatusSource) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        tasks = status["tasks"]
        for key, what in (("submitted", "accepted"), ("completed", "completed without error"), ("failed", "failed")):
            family = CounterMetricFamily(
                f"sockpool_jobs_{key}", f"Calls {what}, by task (a map chunk of N items is N calls).", labels=["task"]
            )
            for task, counts in tasks.items():
                family.add_metric([task], counts[key])
            yield family
        totals = status["totals"]
        yield CounterMetricFamily(
            "sockpool_jobs_refused", "Jobs refused at submit (no worker serves the task).", value=totals["refused"]
        )
        yield CounterMetricFamily(
            "sockpool_jobs_requeued", "Jobs put back in the queue after their worker left.", value=totals["requeued"]
        )
        yield CounterMetricFamily("sockpool_job_retries", "Jobs retried after a failure.", value=totals["retried"])
        queue = status["queue"]
        depth = GaugeMetricFamily("sockpool_queue_depth", "Calls waiting in the broker, by state.", labels=["state"])
        for state in ("ready", "delayed", "waiting_on_limit", "failed"):
            depth.add_metric([state], queue.get(state, 0))
        yield depth
        yield CounterMetricFamily(
            "sockpool_jobs_cancelled", "Jobs cancelled or stopped on request.", value=totals.get("cancelled", 0)
        )
        yield CounterMetricFamily(
            "sockpool_jobs_deduplicated", "Submits that joined a job of the same unique key.",
            value=totals.get("deduplicated", 0),
        )
        yield GaugeMetricFamily("sockpool_unique_keys", "Unique keys held.", value=status.get("unique_keys", 0))
        held = GaugeMetricFamily("sockpool_limit_held", "Slots of a concurrency limit in use.", labels=["limit"])
        waiting = GaugeMetricFamily("sockpool_limit_waiting", "Jobs waiting for a slot of a limit.", labels=["limit"])
        capacity = GaugeMetricFamily("sockpool_limit_capacity", "Slots a limit has.", labels=["limit"])
        for name, limit in status.get("limits", {}).items():
            held.add_metric([name], limit["held"])
            waiting.add_metric([name], limit["waiting"])
            capacity.add_metric([name], limit["limit"])
        yield held
        yield waiting
        yield capacity
        yield GaugeMetricFamily("sockpool_jobs_in_flight", "Calls handed to workers, not finished.", value=queue["in_flight"])
        yield from queue_metrics(status.get("queues", {}))
        schedules = status.get("schedules", [])
        if schedules:
            next_fire = GaugeMetricFamily(
                "sockpool_schedule_next_fire_timestamp_seconds", "When each schedule fires next (Unix time; absent when paused).",
                labels=["schedule"],
            )
            for row in schedules:
                if row["next_fire"] is not None:
                    next_fire.add_metric([row["name"]], row["next_fire"])
            yield next_fire
        yield GaugeMetricFamily("sockpool_workers_connected", "Workers connected.", value=len(status["workers"]))
        yield GaugeMetricFamily("sockpool_worker_processes", "Pool processes of the connected workers.", value=status["processes"])
        yield GaugeMetricFamily("sockpool_clients_connected", "Clients connected.", value=status["clients"])
        yield GaugeMetricFamily(
            "sockpool_broker_active", "1 on the active broker, 0 on a standby (several brokers on one PostgreSQL store).",
            value=1 if status.get("active", True) else 0,
        )
        yield GaugeMetricFamily(
            "sockpool_store_refusing", "1 while the store cannot write and new jobs are refused (disk full).",
            value=1 if status.get("store_refusal") else 0,
        )
        latency = status["latency"]
        for key, name, what in (
            ("queue_wait", "sockpool_job_queue_wait_seconds", "From submit to dispatch to a worker, per job."),
            ("run", "sockpool_job_run_seconds", "From dispatch to the result reaching the broker, per job."),
        ):
            histogram = latency[key]
            yield HistogramMetricFamily(
                name, what,
                buckets=[(_bound(le), count) for le, count in histogram["buckets"]],
                sum_value=histogram["sum"],
            )


def queue_metrics(queues: dict[str, Any]) -> Iterator[Metric]:
    """Per named queue, with a `queue` label."""
    jobs = GaugeMetricFamily("sockpool_queue_jobs", "Calls in each queue, by state (ready, running, delayed).",
                             labels=["queue", "state"])
    oldest = GaugeMetricFamily("sockpool_queue_oldest_wait_seconds", "How long the oldest ready job of each queue has waited.",
                               labels=["queue"])
    paused = GaugeMetricFamily("sockpool_queue_paused", "1 if the queue is paused (broker pause QUEUE).", labels=["queue"])
    completed = CounterMetricFamily("sockpool_queue_completed", "Calls done for good, by queue.", labels=["queue"])
    for name, row in queues.items():
        for state in ("ready", "running", "delayed"):
            jobs.add_metric([name, state], row[state])
        oldest.add_metric([name], row["oldest_wait_s"])
        paused.add_metric([name], 1 if row["paused"] else 0)
        completed.add_metric([name], row["completed"])
    yield from (jobs, oldest, paused, completed)


def _bound(le: Any) -> str:
    return le if isinstance(le, str) else repr(float(le))


def metrics_registry(status: StatusSource) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StatusCollector(status))
    ProcessCollector(registry=registry)  # the broker's own CPU, memory and open files
    return registry


def dashboard_html() -> bytes:
    return resources.files("sockpool.broker").joinpath("dashboard.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: ObserveServer
    timeout = HTTP_TIMEOUT_S  # per read: StreamRequestHandler sets it on the socket

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        path = self.path.split("?", 1)[0]
        if not self.server.host_allowed(self.headers.get("Host")):
            self.send_error(421, "Host not served here: use the broker's address")
            return
        try:
            if path == "/metrics":
                body, content_type = generate_latest(self.server.registry), CONTENT_TYPE_LATEST
            elif path == "/api/status":
                body, content_type = json.dumps(self.server.status()).encode(), "application/json"
            elif path in ("/", "/index.html"):
                body, content_type = self.server.page, "text/html; charset=utf-8"
            else:
                self.send_error(404, "not found: try /, /metrics or /api/status")
                return
        except Exception:  # a broken scrape must not take the broker down
            log.exception("GET %s failed", path)
            self.send_error(500)
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def exposure_warning(host: str, address: str) -> str | None:
    """A warning when the HTTP port is reachable from other machines."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a name, not an address: assume it is reachable
    return (
        f"metrics and dashboard on {address} have no authentication: anyone who can reach this port "
        "sees the workers, task names and recent error messages. Firewall it, or bind the broker "
        "to loopback and put an authenticating proxy in front."
    )


class ObserveServer(ThreadingHTTPServer):
    """The HTTP server; `start()` runs it in a daemon thread."""

    daemon_threads = True
    # Connections over the cap are accepted and closed at once; a short
    # backlog would instead leave them retrying their handshake for seconds.
    request_queue_size = 128

    def __init__(
        self, host: str, port: int, status: StatusSource, *, max_connections: int = MAX_HTTP_CONNECTIONS,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        """`allowed_hosts`: more names the port answers to in a Host header
        (a DNS name Prometheus or a proxy uses), besides IP addresses,
        localhost and this machine's own names."""
        self.address_family = address_family(host)
        super().__init__((host, port), _Handler)
        self.status = status
        self.registry = metrics_registry(status)
        self.page = dashboard_html()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: dict[socket.socket, float] = {}  # connection -> when it must be done
        self._open_lock = threading.Lock()
        self._names = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower(),
                       *(name.lower().rstrip(".") for name in allowed_hosts)}

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's Host header names us: an IP address (a browser
        on a DNS-rebinding page sends the attacker's domain), localhost, or
        this machine's name. No header at all is no browser's request."""
        if header is None:
            return True
        host = header.strip().lower()
        if host.startswith("["):
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return host.rstrip(".") in self._names

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection, if one of MAX_HTTP_CONNECTIONS is free;
        else close it at once."""
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._open[request] = time.monotonic() + HTTP_DEADLINE_S
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # can't start new thread
            self._done(request)
            self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: Any) -> None:
        with self._open_lock:
            if self._open.pop(request, None) is not None:
                self._slots.release()

    def service_actions(self) -> None:
        """Between polls of serve_forever: cut connections past their deadline
        (a peer trickling a byte per read timeout never ends on its own)."""
        now = time.monotonic()
        with self._open_lock:
            late = [sock for sock, deadline in self._open.items() if deadline < now]
        for sock in late:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return join_address(host, port)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
