"""One client of the scale run: `python -m bench.scale_client ADDRESS JOBS START_AT`.

Connects, waits until the wall-clock time START_AT (so that every client
starts together), submits JOBS independent jobs, waits for every result,
checks them and prints {"jobs": JOBS, "finished_at": wall-clock time}.
"""

from __future__ import annotations

import json
import sys
import time

from sockpool.client import Client

WAIT_S = 300.0


def main() -> None:
    address, jobs, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with Client(address) as client:
        time.sleep(max(0.0, start_at - time.time()))
        futures = [client.submit("square", i) for i in range(jobs)]
        values = [f.result(WAIT_S) for f in futures]
        finished_at = time.time()
    if values != [i * i for i in range(jobs)]:
        raise SystemExit("scale client: wrong results")
    print(json.dumps({"jobs": jobs, "finished_at": finished_at}))


if __name__ == "__main__":
    main()
