"""``recstack serve``: build the two-stage service from run folders and files, then run uvicorn."""

from __future__ import annotations

from pathlib import Path

from recstack.serving.service import Catalogue, RecommendationService


def build_service(*, retrieval: str | Path, ranker: str | Path, catalog: str | Path, users: str | Path | None = None, history: str | Path | None = None, index: str | Path | None = None, backend: str = "faiss", kind: str = "flat", user_cache_size: int = 65536) -> RecommendationService:
    """Load both runs, the catalogue, users and histories, and the index (built if not given)."""
    catalogue = Catalogue.from_files(catalog=catalog, users=users, history=history)
    return RecommendationService(retrieval_run=retrieval, ranking_run=ranker, catalogue=catalogue, index=index, backend=backend, kind=kind, user_cache_size=user_cache_size)


def serve(*, host: str = "127.0.0.1", port: int = 8000, threads: int = 1, batch_window_ms: float | None = 1.0, **service_options: object) -> None:
    """Blocks serving HTTP until interrupted. ``batch_window_ms``: see ``create_app``."""
    import gc

    import torch
    import uvicorn

    from recstack.serving.http import create_app

    torch.set_num_threads(threads)
    app = create_app(build_service(**service_options), batch_window_ms=batch_window_ms)  # type: ignore[arg-type]
    # The loaded models, catalogue and index are long-lived: move them out of the collector's
    # reach so full collections (latency spikes) only scan per-request garbage.
    gc.collect()
    gc.freeze()
    print(f"serving on http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
