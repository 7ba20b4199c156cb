"""Open-loop load on a running ``recstack serve`` from one asyncio client (no thread/GIL
contention in the generator): request i is sent at start + i / rate; prints p50/p99 latency.

    .venv/bin/recstack serve --retrieval runs/ml100k_dssm --ranker runs/ml100k_din \\
        --catalog data/ml100k_retrieval/items.parquet --users data/ml100k_retrieval/users.parquet \\
        --history data/ml100k_retrieval/train.parquet --port 8011 &
    .venv/bin/python benchmarks/serving_open_loop.py --url http://127.0.0.1:8011 --rate 100 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import httpx
import numpy as np


async def run(url: str, rate: float, seconds: float, users: int, k: int, seed: int, warm_users: bool) -> dict:
    rng = random.Random(seed)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:
        for _ in range(20):  # warm-up: connections, first-call paths
            await client.post("/recommend", json={"user_id": 1, "k": k})
        if warm_users:  # every user once, sequentially: the server's user cache is then warm
            for user in range(1, users + 1):
                await client.post("/recommend", json={"user_id": user, "k": k})
        start = time.perf_counter()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            sent = time.perf_counter()
            response = await client.post("/recommend", json={"user_id": rng.randint(1, users), "k": k})
            response.raise_for_status()
            latencies.append((time.perf_counter() - sent) * 1000)

        await asyncio.gather(*(one(i) for i in range(int(rate * seconds))))
        elapsed = time.perf_counter() - start
    return {
        "rate": rate,
        "requests": len(latencies),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "requests_per_s": round(len(latencies) / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=943, help="user ids drawn from 1..users")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-users", action="store_true", help="request every user once before timing")
    args = parser.parse_args()
    print(asyncio.run(run(args.url, args.rate, args.seconds, args.users, args.k, args.seed, args.warm_users)))


if __name__ == "__main__":
    main()
