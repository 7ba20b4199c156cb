"""In-process A/B of the stored-user cache: ``RecommendationService.recommend`` for one user at a
time, with the cache (warmed: every user once) and without, interleaved round by round in one
process so machine load hits both alike; prints median and p99 ms per request of each.

    .venv/bin/python benchmarks/serving_user_cache.py --rounds 5 --requests 200
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrieval", default="runs/ml100k_dssm")
    parser.add_argument("--ranker", default="runs/ml100k_din")
    parser.add_argument("--data", default="data/ml100k_retrieval")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="requests per service per round")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from recstack.serving.types import RecommendRequest
    from recstack.workflows.serve import build_service

    files = {"catalog": f"{args.data}/items.parquet", "users": f"{args.data}/users.parquet", "history": f"{args.data}/train.parquet"}
    services = {
        "cache": build_service(retrieval=args.retrieval, ranker=args.ranker, user_cache_size=16_384, **files),
        "no cache": build_service(retrieval=args.retrieval, ranker=args.ranker, user_cache_size=0, **files),
    }
    users = [int(u) for u in services["cache"].catalogue.users.keys]
    for service in services.values():  # warm-up: first-call paths, and every user cached once
        for user in users:
            service.recommend([RecommendRequest(user_id=user)])
    rng = random.Random(0)
    times: dict[str, list[float]] = {name: [] for name in services}
    for _ in range(args.rounds):
        draw = [rng.choice(users) for _ in range(args.requests)]
        for name, service in services.items():
            for user in draw:
                started = time.perf_counter()
                service.recommend([RecommendRequest(user_id=user)])
                times[name].append((time.perf_counter() - started) * 1000)
    result = {
        name: {"median_ms": round(statistics.median(t), 2), "p99_ms": round(float(np.percentile(t, 99)), 2), "requests": len(t)}
        for name, t in times.items()
    }
    result["speed-up"] = round(result["no cache"]["median_ms"] / result["cache"]["median_ms"], 2)
    result["cache"]["stats"] = services["cache"].models.user_cache.stats()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
