"""`sockpool.AsyncClient` on a real cluster: the Client's guarantees, in asyncio."""

from __future__ import annotations

import asyncio
import time

import pytest

from sockpool import AsyncClient, HandshakeRefused, JobFailed

from .cluster import start_broker, start_worker, wait_for_processes
from .test_durability import free_port
from .test_security import certs, write_secret  # noqa: F401  (certs: a fixture)

WAIT_S = 60


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT_S))


def test_submit_map_as_completed_and_status(cluster):
    cluster.add_worker(2, "--tasks", "tests.tasks")

    async def main():
        async with AsyncClient(cluster.address) as client:
            assert await client.submit("square", 7) == 49
            assert await client.submit("tests.tasks:greet", "ada", greeting="hi") == "hi ada"
            handles = [client.submit("square", i) for i in range(500)]
            assert await asyncio.gather(*handles) == [i * i for i in range(500)]
            assert [v async for v in client.map("square", range(1000))] == [i * i for i in range(1000)]
            assert await client.map("square", range(1000), chunksize=64) == [i * i for i in range(1000)]
            with pytest.raises(JobFailed, match="TypeError"):
                await client.map("square", [1, "x"])

            async def numbers():
                for i in range(50):
                    await asyncio.sleep(0)
                    yield i

            assert [v async for v in client.map("tests.tasks:cube", numbers(), chunksize=7)] == [i**3 for i in range(50)]
            slow, fast = client.submit("tests.tasks:busy", 0.5), client.submit("square", 3)
            order = [h async for h in client.as_completed([slow, fast])]
            assert order == [fast, slow] and await fast == 9
            with pytest.raises(TimeoutError):
                async for _ in client.as_completed([client.submit("tests.tasks:busy", 2.0)], timeout=0.1):
                    pass
            status = await client.status()
            assert status["processes"] == 2 and status["totals"]["completed"] >= 1500
            with pytest.raises(ValueError):
                await client.submit("tests.tasks:fail", "bad input")
            failing = client.map("square", [1, 2, "x", 4], chunksize=2)
            assert [await anext(failing), await anext(failing)] == [1, 4]
            with pytest.raises(JobFailed, match="TypeError"):
                await anext(failing)
            assert [v async for v in client.map("square", [1, "x"], chunksize=1, return_exceptions=True)][0] == 1
            # Job options travel as Client's do.
            with pytest.raises(JobFailed, match="Timeout"):
                await client.with_options(timeout=0.3).submit("tests.tasks:hang")
            assert [v async for v in client.with_options(retries=1).map("square", range(3))] == [0, 1, 4]

    run(main())


def test_async_def_tasks_run_in_the_pool_process(cluster):
    cluster.add_worker(2, "--tasks", "tests.tasks")

    async def main():
        async with AsyncClient(cluster.address) as client:
            assert await client.submit("tests.tasks:async_square", 6, 0.01) == 36
            values = [v async for v in client.map("tests.tasks:async_square", range(100), chunksize=9)]
            assert values == [i * i for i in range(100)]
            with pytest.raises(KeyError) as failed:
                await client.submit("tests.tasks:async_fail", "gone")
            assert failed.value.args == ("gone",)

    run(main())


@pytest.mark.slow
def test_the_event_loop_keeps_running_during_a_large_map(cluster):
    """A coroutine ticking every 5 ms keeps ticking while maps run: nothing
    the client does blocks the loop. The slow map takes 2 s (800 calls of
    5 ms on 2 processes), so a client blocking the loop for it would show a
    gap of 2 s or more; the bound (1.5 s; gaps are milliseconds on a quiet
    machine, under 0.8 s at a load average of 8 on 2 cores) leaves room for
    a machine under load."""
    cluster.add_worker(2, "--tasks", "tests.tasks")

    async def main():
        ticks: list[float] = []

        async def ticker():
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.005)

        async with AsyncClient(cluster.address) as client:
            ticking = asyncio.create_task(ticker())
            started = time.monotonic()
            slow = [v async for v in client.map("tests.tasks:async_slow_square", range(800), chunksize=5)]
            big = [v async for v in client.map("square", range(200_000))]
            # submit() is synchronous (and cheap): a loop of thousands yields now and then.
            handles = []
            for start in range(0, 20_000, 500):
                handles += [client.submit("square", i) for i in range(start, start + 500)]
                await asyncio.sleep(0)
            many = await asyncio.gather(*handles)
            status = await client.status()
            finished = time.monotonic()
            ticking.cancel()
        assert slow == [i * i for i in range(800)] and status["processes"] == 2
        assert big == [i * i for i in range(200_000)] and many == [i * i for i in range(20_000)]
        during = [t for t in ticks if started <= t <= finished]
        gaps = [b - a for a, b in zip(during, during[1:])]
        assert len(during) > 20 and max(gaps) < 1.5, (len(during), max(gaps), finished - started)

    run(main())


def test_async_client_survives_a_broker_kill_9_and_delivers_each_result_once(tmp_path):
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    worker = None
    try:
        async def main():
            nonlocal broker, address, worker
            async with AsyncClient(address) as client:
                handles = [client.submit("square", i) for i in range(300)]
                results = client.map("square", range(3000), chunksize=100)  # its first chunks go now
                assert await client.wait_accepted(WAIT_S)
                broker.kill()
                broker, address = await asyncio.to_thread(start_broker, tmp_path, port=port)
                worker = start_worker(tmp_path, address, 2)
                assert await asyncio.gather(*handles) == [i * i for i in range(300)]
                assert [v async for v in results] == [i * i for i in range(3000)]

        run(main())
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def test_secrets_and_tls_as_the_client(tmp_path, certs):  # noqa: F811
    good, _ = certs
    secret = write_secret(tmp_path / "secret")
    broker, address = start_broker(tmp_path, "--secret-file", secret, "--tls-cert", str(good.cert),
                                   "--tls-key", str(good.key))
    worker = start_worker(tmp_path, address, 1, "--secret-file", secret, "--tls-ca", str(good.ca))
    try:
        wait_for_processes(address, 1, secret_file=secret, tls_ca=str(good.ca))

        async def main():
            async with AsyncClient(address, secret_file=secret, tls_ca=str(good.ca)) as client:
                assert await client.submit("square", 12) == 144
                assert await client.map("square", range(100)) == [i * i for i in range(100)]
            for options in ({"tls_ca": str(good.ca)}, {"secret_file": secret}):
                with pytest.raises(HandshakeRefused):
                    async with AsyncClient(address, **options):
                        pass

        run(main())
    finally:
        worker.stop()
        broker.stop()
