"""``recstack serve``: build the two-stage service from run folders and files, then run uvicorn.

With ``workers > 1`` uvicorn starts that many server processes on one port; each builds its
own service (models, index, caches) through ``app_from_env``, which reads the options this
process put in ``RECSTACK_SERVE_OPTIONS``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from recstack.serving.catalogue import Catalogue
from recstack.serving.service import RecommendationService
from recstack.serving.types import DEFAULT_USER_CACHE

OPTIONS_VARIABLE = "RECSTACK_SERVE_OPTIONS"


def build_service(*, retrieval: str | Path, ranker: str | Path, catalog: str | Path, users: str | Path | None = None, history: str | Path | None = None, index: str | Path | None = None, backend: str = "faiss", kind: str = "flat", user_cache_size: int = DEFAULT_USER_CACHE) -> RecommendationService:
    """Load both runs, the catalogue, users and histories, and the index (built if not given)."""
    catalogue = Catalogue.from_files(catalog=catalog, users=users, history=history)
    return RecommendationService(retrieval_run=retrieval, ranking_run=ranker, catalogue=catalogue, index=index, backend=backend, kind=kind, user_cache_size=user_cache_size)


def build_app(*, threads: int = 1, batch_window_ms: float | None = 1.0, **service_options: Any) -> Any:
    """The FastAPI app over a freshly built service, ready to serve."""
    import gc

    import torch

    from recstack.serving.http import create_app

    torch.set_num_threads(threads)
    app = create_app(build_service(**service_options), batch_window_ms=batch_window_ms)
    # The loaded models, catalogue and index are long-lived: move them out of the collector's
    # reach so full collections (latency spikes) only scan per-request garbage.
    gc.collect()
    gc.freeze()
    return app


def app_from_env() -> Any:
    """``build_app`` with the options in ``RECSTACK_SERVE_OPTIONS`` (uvicorn's factory in each worker)."""
    return build_app(**json.loads(os.environ[OPTIONS_VARIABLE]))


def serve(*, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, threads: int = 1, batch_window_ms: float | None = 1.0, **service_options: Any) -> None:
    """Blocks serving HTTP until interrupted. ``batch_window_ms``: see ``create_app``."""
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    print(f"serving on http://{host}:{port}/" + (f" ({workers} processes)" if workers > 1 else ""), flush=True)
    if workers == 1:
        app = build_app(threads=threads, batch_window_ms=batch_window_ms, **service_options)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
        return
    options = {"threads": threads, "batch_window_ms": batch_window_ms, **{k: str(v) if isinstance(v, Path) else v for k, v in service_options.items()}}
    os.environ[OPTIONS_VARIABLE] = json.dumps(options)  # inherited by the spawned workers
    uvicorn.run("recstack.workflows.serve:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="warning", access_log=False)
