"""``recstack serve``: build the two-stage service from run folders and files, then run uvicorn.

With ``workers > 1`` uvicorn starts that many server processes on one port; each builds its
own service (models, index, caches) through ``app_from_env``, which reads the options this
process put in ``RECSTACK_SERVE_OPTIONS``.

Per-request limits (``ServingLimits``: users, candidates, k, history, body bytes, deadline,
ranker chunk) are keyword arguments of ``build_service`` / ``serve``; None keeps the default::

    serve(retrieval="runs/dssm", ranker="runs/din", catalog="items.parquet", max_users=16, deadline_ms=500)
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from recstack.errors import ConfigError
from recstack.export.run_folder import LoadedRun, load_run
from recstack.serving.catalogue import Catalogue
from recstack.serving.limits import ServingLimits
from recstack.serving.blend import Blend
from recstack.serving.service import RecommendationService
from recstack.serving.types import DEFAULT_USER_CACHE

OPTIONS_VARIABLE = "RECSTACK_SERVE_OPTIONS"


def build_service(*, retrieval: str | Path | LoadedRun, ranker: str | Path, catalog: str | Path, users: str | Path | None = None, history: str | Path | None = None, index: str | Path | None = None, backend: str = "faiss", kind: str = "flat", user_cache_size: int = DEFAULT_USER_CACHE,
                  user_column: str = "user_id", history_label_column: str | None = "label", history_time_column: str = "timestamp",
                  max_users: int | None = None, max_candidates: int | None = None, max_k: int | None = None, max_history: int | None = None,
                  max_body_bytes: int | None = None, deadline_ms: int | None = None, chunk_rows: int | None = None, blend: str | None = None) -> RecommendationService:
    """Load both runs, the catalogue, users and histories, and the index (built if not given).

    Items are keyed by the retrieval run's own item-id column (``served_item_column``: ``post_id``
    in seed 001), in the catalogue, the histories, the exclusions and the responses; its values,
    integers or strings, are served as they are.

    ``user_column``: the users' and histories' user-id column (``client_id`` in seed 001);
    ``history_label_column``: history rows with a value > 0 there are the positives (None: every
    row); ``history_time_column`` orders them.
    ``max_users`` ... ``chunk_rows``: the ``ServingLimits`` fields (None: the default value).
    ``blend``: a multi-task ranker's rank score, ``product:click=1,like=0.5`` or ``sum:...``
    (``serving.blend``; None: the product of its targets' probabilities).
    """
    limits = serving_limits(max_users=max_users, max_candidates=max_candidates, max_k=max_k, max_history=max_history, max_body_bytes=max_body_bytes, deadline_ms=deadline_ms, chunk_rows=chunk_rows)
    retrieval_run = retrieval if isinstance(retrieval, LoadedRun) else load_run(retrieval)
    catalogue = Catalogue.from_files(catalog=catalog, users=users, history=history, item_column=served_item_column(retrieval_run, catalog), user_column=user_column, history_label_column=history_label_column, history_time_column=history_time_column)
    return RecommendationService(retrieval_run=retrieval_run, ranking_run=ranker, catalogue=catalogue, index=index, backend=backend, kind=kind, user_cache_size=user_cache_size, limits=limits, blend=Blend.parse(blend) if blend else None)


def served_item_column(run: LoadedRun, catalog: str | Path) -> str:
    """The retrieval run's item-id column (``export.item_id_column``); the catalogue's columns
    decide only when the run's schema leaves it open (several item-side categorical features)."""
    from recstack.data.sources import DataSource
    from recstack.serving.feature_table import read_table
    from recstack.workflows.export import item_id_column

    try:
        return item_id_column(run)
    except ConfigError:
        return item_id_column(run, read_table(DataSource.from_config(str(catalog), key="catalog")))


def serving_limits(**values: int | None) -> ServingLimits:
    """``ServingLimits`` from keyword values, None keeping a field's default (a ConfigError
    names a bad one). Validated before any model is loaded."""
    known = {f.name for f in fields(ServingLimits)}
    return ServingLimits(**{name: value for name, value in values.items() if name in known and value is not None})


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
    """Blocks serving HTTP until interrupted. ``batch_window_ms``: see ``create_app``.

    ``service_options``: ``build_service``'s keywords, the limits (``max_users``,
    ``max_candidates``, ``max_k``, ``max_history``, ``max_body_bytes``, ``deadline_ms``,
    ``chunk_rows``) among them.
    """
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    serving_limits(**{k: v for k, v in service_options.items() if k in {f.name for f in fields(ServingLimits)}})  # a bad limit fails here, not in each worker
    print(f"serving on http://{host}:{port}/" + (f" ({workers} processes)" if workers > 1 else ""), flush=True)
    if workers == 1:
        app = build_app(threads=threads, batch_window_ms=batch_window_ms, **service_options)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
        return
    options = {"threads": threads, "batch_window_ms": batch_window_ms, **{k: str(v) if isinstance(v, Path) else v for k, v in service_options.items()}}
    os.environ[OPTIONS_VARIABLE] = json.dumps(options)  # inherited by the spawned workers
    uvicorn.run("recstack.workflows.serve:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="warning", access_log=False)
