"""Load test of ``POST /recommend`` (recall + rank) on MovieLens-100K over loopback.

Starts ``recstack serve`` in a subprocess, then drives it from a separate load-generator process
(httpx, one client per thread). Closed loop at concurrency 1, 4, 16 (bounded by --requests and
--seconds per level), then an open loop at --rate requests/s; prints p50/p99 latency and
requests/s as JSON. Also times the user tower eager vs ONNX Runtime, and the ranker on one
request's 100 candidates eager vs torch.export vs ONNX Runtime (a form that fails to export is
reported with its error).

    .venv/bin/python benchmarks/serving.py --requests 300 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_level(url: str, concurrency: int, requests: int, seconds: float, users: list[int], rate: float | None, candidates: int = 100) -> dict:
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    counter = iter(range(requests))
    started = time.perf_counter()

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                if rate:  # open loop: request i is due at started + i / rate
                    wait = started + i / rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                t = time.perf_counter()
                response = client.post("/recommend", json={"user_id": users[i % len(users)], "k": 10, "candidates": candidates})
                response.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "target_rate": rate, "requests": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2), "requests_per_s": round(len(ms) / elapsed, 1)}


def _generator(url: str, plan: list[tuple[int, float | None]], args: argparse.Namespace, users: list[int], out: multiprocessing.Queue) -> None:
    out.put([load_level(url, c, args.requests, args.seconds, users, rate, args.candidates) for c, rate in plan])


def tower_timing(run: str, rows: int = 1, repeats: int = 200) -> dict:
    """Milliseconds per user-tower call on ``rows`` users: eager PyTorch vs ONNX Runtime."""
    import onnxruntime as ort
    import pyarrow.parquet as pq
    import torch

    from recstack.export.onnx_towers import export_tower_onnx
    from recstack.export.run_folder import load_run
    from recstack.workflows.retrieval import user_feature_names

    torch.set_num_threads(1)
    loaded = load_run(run)
    tower = loaded.model.user_tower()
    table = pq.read_table(ROOT / "data/ml100k_retrieval/valid.parquet").slice(0, rows)
    batch = loaded.preprocessor.transform(table, features=user_feature_names(loaded.model), with_label=False)
    inputs = tower.inputs_from_batch(batch)
    path = Path("/tmp/recstack_bench_user_tower.onnx")
    export_tower_onnx(tower, inputs, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feeds = {n: t.numpy() for n, t in inputs.items() if n in names}

    def clock(fn) -> float:
        for _ in range(20):
            fn()
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        return round((time.perf_counter() - t) / repeats * 1000, 3)

    with torch.no_grad():
        eager = clock(lambda: tower(*inputs.values()))
    return {"rows": rows, "eager_ms": eager, "onnxruntime_ms": clock(lambda: session.run(None, feeds))}


def ranker_timing(retrieval: str, ranker: str, data: Path, users: int = 30, candidates: int = 100, repeats: int = 5) -> dict:
    """Milliseconds per ranker forward on one request's candidates (the service's own batches),
    eager vs torch.export vs ONNX Runtime, interleaved in one process; medians of ``repeats``."""
    import torch

    from recstack.data.batch import Batch
    from recstack.serving.ranker_scorer import _quiet_stdout
    from recstack.serving.types import RecommendRequest
    from recstack.workflows.serve import build_service

    torch.set_num_threads(1)
    service = build_service(retrieval=retrieval, ranker=ranker, catalog=data / "items.parquet", users=data / "users.parquet", history=data / "train.parquet")
    models = service.models
    batches = []
    captured: list[Batch] = []
    rank = models.ranker_inputs.batch
    models.ranker_inputs.batch = lambda *a: captured.append(rank(*a)) or captured[-1]  # type: ignore[method-assign]
    for user in service.catalogue.users.keys[:users]:
        service.recommend([RecommendRequest(user_id=int(user), k=10, candidates=candidates)])
    batches, models.ranker_inputs.batch = captured, rank  # type: ignore[method-assign]
    spec = [(kind, name) for kind in ("ids", "sequences", "weights", "dense") for name in getattr(batches[0], kind)]

    class Flat(torch.nn.Module):  # the ranker over positional tensors, as exporters take it
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            batch = Batch()
            for (kind, name), tensor in zip(spec, tensors):
                getattr(batch, kind)[name] = tensor
            return torch.sigmoid(self.model(batch))

    flat = Flat(models.ranker.model).eval()
    args = [tuple(getattr(b, kind)[name] for kind, name in spec) for b in batches]
    forms: dict[str, object] = {"eager": lambda a: flat(*a)}
    errors: dict[str, str] = {}
    rows = torch.export.Dim("C", min=2, max=1 << 20)
    try:
        with torch.no_grad():
            exported = torch.export.export(flat, args[0], dynamic_shapes=(tuple({0: rows} for _ in spec),)).module()
        forms["torch.export"] = lambda a: exported(*a)
    except Exception as error:  # noqa: BLE001 - reported, not fatal
        errors["torch.export"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    try:
        import onnxruntime as ort

        path = "/tmp/recstack_bench_ranker.onnx"
        with torch.no_grad(), _quiet_stdout():  # a failed export prints its whole graph
            torch.onnx.export(flat, args[0], path, input_names=[n for _, n in spec], output_names=["probs"], dynamic_axes={n: {0: "C"} for _, n in spec}, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        forms["onnxruntime"] = lambda a: session.run(None, {n: t.numpy() for (_, n), t in zip(spec, a) if n in names})
    except Exception as error:  # noqa: BLE001
        errors["onnxruntime"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    times: dict[str, list[float]] = {name: [] for name in forms}
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first round warms up
            for name, form in forms.items():
                t = time.perf_counter()
                for a in args:
                    form(a)  # type: ignore[operator]
                times[name].append((time.perf_counter() - t) / len(args) * 1000)
    return {"candidates": candidates, "ms": {n: round(float(np.median(v[1:])), 3) for n, v in times.items()}, "failed": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retrieval", default="runs/ml100k_dssm")
    parser.add_argument("--ranker", default="runs/ml100k_din")
    parser.add_argument("--data", default="data/ml100k_retrieval")
    parser.add_argument("--requests", type=int, default=300, help="requests per level, at most")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per level, at most")
    parser.add_argument("--rate", type=float, default=100.0, help="open-loop level, requests/s (0: skip)")
    parser.add_argument("--candidates", type=int, default=100, help="N recalled and ranked per request")
    parser.add_argument("--batch-window-ms", type=float, default=1.0, help="the server's micro-batching window (0: off)")
    parser.add_argument("--no-timings", action="store_true", help="skip the user tower and ranker timings")
    parser.add_argument("--user-cache", type=int, default=16_384, help="the server's stored-user cache size (0: off)")
    parser.add_argument("--warm-users", action="store_true", help="request every user once before the timed levels")
    args = parser.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = Path(args.data)
    server = subprocess.Popen(
        [sys.executable, "-m", "recstack.cli", "serve", "--retrieval", args.retrieval, "--ranker", args.ranker, "--catalog", str(data / "items.parquet"),
         "--users", str(data / "users.parquet"), "--history", str(data / "train.parquet"), "--port", str(port),
         "--batch-window-ms", str(args.batch_window_ms), "--user-cache", str(args.user_cache)],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        users = httpx.get(url + "/users").json()["user_ids"]
        for user in users if args.warm_users else users[:20]:  # warm-up (every user: a warm user cache)
            httpx.post(url + "/recommend", json={"user_id": user, "k": 10, "candidates": args.candidates}, timeout=10)
        plan: list[tuple[int, float | None]] = [(1, None), (4, None), (16, None)] + ([(16, args.rate)] if args.rate else [])
        queue: multiprocessing.Queue = multiprocessing.Queue()
        generator = multiprocessing.Process(target=_generator, args=(url, plan, args, users, queue))
        generator.start()
        levels = queue.get()
        generator.join()
    finally:
        server.terminate()
        server.wait(timeout=10)
    report: dict = {"candidates": args.candidates, "user_cache": args.user_cache, "warm_users": args.warm_users, "levels": levels}
    if not args.no_timings:
        report["user_tower"] = [tower_timing(args.retrieval, rows) for rows in (1, 64)]
        report["ranker"] = ranker_timing(args.retrieval, args.ranker, data, candidates=args.candidates)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
