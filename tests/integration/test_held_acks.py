"""A lone job's ack is held back to travel with the client's next submit
(client/acks.py): the broker forgets each result by the next round trip,
the last one by the next heartbeat or the client's close, and a kill -9
of the broker in between loses nothing and delivers nothing twice."""

from __future__ import annotations

from sockpool.client import Client

from .cluster import start_broker
from .conftest import Cluster
from .test_durability import free_port, wait_until

WAIT_S = 30


def kept(address: str) -> int:
    with Client(address, operator=True) as operator:
        return int(operator.status()["results_kept"])


def test_held_acks_go_with_the_next_submit_the_heartbeat_and_close(tmp_path):
    cluster = Cluster(tmp_path, "--session-grace-s", "60")
    try:
        cluster.add_worker(2, "--tasks", "tests.tasks")
        with Client(cluster.address) as client:
            for i in range(5):
                assert client.submit("square", i).result(WAIT_S) == i * i
            # Each ack went with the next submit; the last one is held (unless
            # a heartbeat took it just now: then again, after one more).
            kept_now = []
            for i in range(3):
                assert client.submit("square", i).result(WAIT_S) == i * i
                kept_now.append(client.status()["results_kept"])
                if kept_now[-1] == 1:
                    break
            assert kept_now[-1] == 1 and max(kept_now) == 1, kept_now
            # The heartbeat (every 2 s) takes it.
            wait_until(lambda: client.status()["results_kept"] == 0, WAIT_S, "the held ack to go with a heartbeat")
            assert client.submit("square", 7).result(WAIT_S) == 49
        # The client's close sends what it holds: the session's result is
        # not kept for the session grace (60 s) waiting for an ack.
        wait_until(lambda: kept(cluster.address) == 0, 5, "the held ack to go at close")
    finally:
        cluster.stop()


def test_a_held_ack_survives_a_broker_kill(tmp_path):
    port = free_port()
    broker_args = ("--data-dir", str(tmp_path / "data"), "--port", str(port))
    cluster = Cluster(tmp_path, *broker_args)
    try:
        cluster.add_worker(2, "--tasks", "tests.tasks")
        with Client(cluster.address) as client:
            assert client.submit("square", 3).result(WAIT_S) == 9
            cluster.broker.kill()  # its ack is still held by the client
            cluster.broker, _ = start_broker(tmp_path, *broker_args)
            # The client reconnects; the restored result comes again and is
            # ignored (its future is done), then acknowledged.
            assert client.submit("square", 4).result(WAIT_S) == 16
            assert client.submit("square", 5).result(WAIT_S) == 25
            wait_until(lambda: client.status()["results_kept"] == 0, WAIT_S, "every result to be acknowledged")
    finally:
        cluster.stop()
