"""Large arguments through a real broker and worker arrive intact, each
job its own bytes: frames over the reused buffer's size go into the
worker's kept mapping one after another (protocol/framing.py, rule 4),
and its pool reuses freed buffers (worker/heap.py)."""

from __future__ import annotations

import hashlib
import os

from sockpool.client import Client

WAIT_S = 60.0


def test_many_large_arguments_in_a_row_each_arrive_whole(cluster):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    # Sizes over 1 MiB + 64 KiB, smaller and larger in turn, each job's
    # bytes different: a frame written over a body still held, or read
    # past its own end, would give a wrong digest.
    sizes = [3 << 20, (1 << 20) + (1 << 17), 5 << 20, 2 << 20, 5 << 20, 3 << 20]
    data = [os.urandom(n) for n in sizes]
    with Client(cluster.address) as client:
        futures = [client.submit("tests.tasks:digest", d) for d in data]
        digests = [f.result(WAIT_S) for f in futures]
    assert digests == [hashlib.sha256(d).hexdigest() for d in data], cluster.logs()
