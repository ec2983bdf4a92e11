#!/usr/bin/env python3
"""Open-loop gRPC load: unary SayHello calls at a fixed rate, latencies measured per call.

    python bench/grpc_load.py PORT RATE DURATION_S [CONCURRENCY_CAP]

Calls start on schedule (t0 + i/RATE) whatever earlier calls do, like wrk2, so a slow
server shows as latency rather than as a lower offered rate; at most CONCURRENCY_CAP
calls are in flight (later starts wait, and that wait counts in their latency).
Prints one JSON object: requests, rps, p50_ms, p90_ms, p99_ms, errors. The server is
tests/e2e/grpc_app.py (grpcio, raw bytes, no codegen).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc

METHOD = "/helloworld.Greeter/SayHello"


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


async def run(port: int, rate: float, duration: float, cap: int = 256) -> dict:
    lat: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(cap)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        say = ch.unary_unary(METHOD)
        await say(b"warm-up")

        async def one(due: float) -> None:
            nonlocal errors
            async with sem:
                try:
                    await say(b"bench")
                except grpc.RpcError:
                    errors += 1
                    return
            lat.append(time.perf_counter() - due)

        tasks = []
        t0 = time.perf_counter()
        n = int(rate * duration)
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    lat.sort()
    # requests counts the warm-up call too: the server served it (a span is due).
    return {"requests": len(lat) + 1, "rps": len(lat) / elapsed, "errors": errors,
            "p50_ms": _pct(lat, 50) * 1000 if lat else None,
            "p90_ms": _pct(lat, 90) * 1000 if lat else None,
            "p99_ms": _pct(lat, 99) * 1000 if lat else None}


if __name__ == "__main__":
    port, rate, dur = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    cap = int(sys.argv[4]) if len(sys.argv) > 4 else 256
    print(json.dumps(asyncio.run(run(port, rate, dur, cap))))
