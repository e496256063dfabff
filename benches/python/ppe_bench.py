"""The peer for the process-worker bench: Python's ProcessPoolExecutor running the same
trivial function. Prints one JSON line: {"workers", "calls", "seconds", "calls_per_sec"}."""

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def echo(text):
    return {"text": text}


def main():
    workers = int(sys.argv[1])
    calls = int(sys.argv[2])
    with ProcessPoolExecutor(max_workers=workers) as pool:
        # Warm up: start every worker process before timing.
        list(pool.map(echo, ["warm"] * (workers * 4)))
        start = time.perf_counter()
        futures = [pool.submit(echo, str(i)) for i in range(calls)]
        for i, future in enumerate(futures):
            assert future.result() == {"text": str(i)}
        seconds = time.perf_counter() - start
    print(json.dumps({"workers": workers, "calls": calls, "seconds": seconds, "calls_per_sec": calls / seconds}))


if __name__ == "__main__":
    main()
