"""One client of the scale run: `python -m bench.scale_client ADDRESS JOBS START_AT`.

Connects, waits until the wall-clock time START_AT (so that every client
starts together), submits JOBS independent jobs, waits for every result,
checks them and prints {"jobs": JOBS, "finished_at": wall-clock time,
"cpu_s": its own CPU seconds from its first submit to its last result,
"wakeups": its threads' voluntary context switches meanwhile} (the last
two for bench/scale_cpu.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from sockpool.client import Client

WAIT_S = 300.0


def wakeups(pid: int | str = "self") -> int:
    """Voluntary context switches of every thread of `pid` so far: each
    is a sleep ended by a wake-up (a read that waited, a lock, a condition)."""
    count = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    count += int(line.split()[1])
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    return count


def main() -> None:
    address, jobs, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with Client(address) as client:
        time.sleep(max(0.0, start_at - time.time()))
        times, woken = os.times(), wakeups()
        futures = [client.submit("square", i) for i in range(jobs)]
        values = [f.result(WAIT_S) for f in futures]
        finished_at = time.time()
        after = os.times()
        woken = wakeups() - woken
    if values != [i * i for i in range(jobs)]:
        raise SystemExit("scale client: wrong results")
    cpu_s = after.user + after.system - times.user - times.system
    print(json.dumps({"jobs": jobs, "finished_at": finished_at, "cpu_s": cpu_s, "wakeups": woken}))


if __name__ == "__main__":
    main()
