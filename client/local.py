"""An embedded broker and worker in this process, for `submit --local`.

The broker listens on a free loopback port, one worker joins it with a
pool sized to this machine, and both stop when the block ends: the main
job runs with no cluster set up.
"""

from __future__ import annotations

import threading
from types import TracebackType

from sockpool.protocol.defaults import CHUNK_TARGET_S, MAX_FRAME_BYTES


class LocalCluster:
    def __init__(self, processes: int | None = None, modules: tuple[str, ...] = (), secret: bytes | None = None) -> None:
        # Imported here: a plain client needs neither the broker nor the worker.
        from sockpool.broker.server import BrokerServer
        from sockpool.worker.node import WorkerNode
        from sockpool.worker.runner import Runner, default_processes

        from sockpool.net.credentials import Credentials

        self.runner = Runner(processes or default_processes(), list(modules), CHUNK_TARGET_S)
        self.broker = BrokerServer("127.0.0.1", 0, max_frame_bytes=MAX_FRAME_BYTES, name="local", secret=secret)
        self.broker.start()
        self.address = self.broker.address
        self.node = WorkerNode(self.address, self.runner, name="local", credentials=Credentials(secret=secret))
        self._node_thread = threading.Thread(target=self.node.run, name="local-worker", daemon=True)
        self._node_thread.start()

    def close(self) -> None:
        self.node.stop()
        self._node_thread.join(timeout=5)
        self.runner.close()
        self.broker.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

