"""``recstack export / embed-items / embed-users / index``: a two-tower run's towers, vectors and
item index, written for serving.

``export_run`` writes ``RUN/export/{user,item}_tower.onnx`` and ``{user,item}_tower.pt`` (the
tower's state_dict) and refuses to finish unless onnxruntime reproduces PyTorch within ``atol``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from recstack.atomic import atomic_path, write_json_atomic
from recstack.data.sources import DataSource
from recstack.errors import ConfigError
from recstack.export.onnx_towers import export_tower_onnx, onnx_max_abs_error
from recstack.export.run_folder import LoadedRun, load_run
from recstack.workflows.retrieval import _dataset_file, embed_items, embed_users, item_feature_names, user_feature_names

EXAMPLE_ROWS = 256


def _two_tower(run_dir: str | Path) -> LoadedRun:
    run = load_run(run_dir)
    if not (hasattr(run.model, "user_tower") and hasattr(run.model, "item_tower")):
        raise ConfigError(f"{run_dir}: not a two-tower run (model {run.model_spec.get('name')!r} has no user/item towers)")
    return run


def _run_source(run: LoadedRun, key: str, fallback_file: str, given: str | Path | None) -> DataSource:
    spec = given or (run.config.get("data") or {}).get(key) or _dataset_file(run.config, fallback_file)
    if not spec:
        raise ConfigError(f"--{key}: the run's config names no {key} file; pass one")
    return DataSource.from_config(str(spec) if isinstance(spec, Path) else spec, key=key)


def _example_batch(run: LoadedRun, source: DataSource, features: list[str]):  # -> Batch
    chunk = next(iter(source.chunks()))
    records = chunk.records.slice(0, EXAMPLE_ROWS)
    return run.preprocessor.transform(records, features=features, with_label=False)


@torch.no_grad()
def export_run(run_dir: str | Path, *, catalog: str | Path | None = None, data: str | Path | None = None, atol: float = 1e-5) -> dict[str, Any]:
    """Both towers as weights + ONNX in ``RUN/export/``; returns the report written there."""
    run = _two_tower(run_dir)
    out = run.paths.exports
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"atol": atol}
    sides = {
        "user": (run.model.user_tower(), _example_batch(run, _run_source(run, "train", "train.parquet", data), user_feature_names(run.model))),
        "item": (run.model.item_tower(), _example_batch(run, _run_source(run, "catalog", "items.parquet", catalog), item_feature_names(run.model))),
    }
    for side, (tower, batch) in sides.items():
        inputs = tower.inputs_from_batch(batch)
        onnx_path = export_tower_onnx(tower, inputs, out / f"{side}_tower.onnx")
        with atomic_path(out / f"{side}_tower.pt") as tmp:
            torch.save({k: v.detach().cpu() for k, v in tower.state_dict().items()}, tmp)
        error = onnx_max_abs_error(tower, onnx_path, inputs)
        report[side] = {"onnx": onnx_path.name, "weights": f"{side}_tower.pt", "inputs": list(inputs), "max_abs_error": error, "rows_checked": len(batch)}
        if not error <= atol:
            raise RuntimeError(f"{side} tower: ONNX differs from PyTorch by {error:.3g} > {atol}")
    write_json_atomic(out / "export.json", report)
    return report


def write_embeddings(path: str | Path, ids: np.ndarray, vectors: np.ndarray, *, id_column: str) -> Path:
    """``.parquet``: columns ``id_column`` and ``vector`` (fixed-size list); ``.npy``: the vectors,
    with the ids in ``<stem>.ids.npy`` beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        with atomic_path(path.with_suffix(".ids.npy")) as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(ids))
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, vectors)
        return path
    if path.suffix.lower() not in (".parquet", ".pq"):
        raise ConfigError(f"--output: expected a .parquet or .npy file, got {str(path)!r}")
    import pyarrow.parquet as pq

    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])
    with atomic_path(path) as tmp:
        pq.write_table(pa.table({id_column: pa.array(ids), "vector": column}), tmp)
    return path


def embed_items_run(run_dir: str | Path, *, catalog: str | Path | None, output: str | Path) -> int:
    run = _two_tower(run_dir)
    ids, vectors = embed_items(run.model, run.preprocessor, _run_source(run, "catalog", "items.parquet", catalog))
    write_embeddings(output, ids, vectors, id_column="item_id")
    return len(ids)


def embed_users_run(run_dir: str | Path, *, data: str | Path, output: str | Path, user_column: str = "user_id") -> int:
    run = _two_tower(run_dir)
    ids, vectors = embed_users(run.model, run.preprocessor, DataSource.from_config(str(data), key="data"), user_column=user_column)
    write_embeddings(output, ids, vectors, id_column=user_column)
    return len(ids)


def build_index_run(run_dir: str | Path, *, catalog: str | Path | None, backend: str, output: str | Path, kind: str | None = None, uri: str | None = None, collection: str = "items") -> int:
    """The item index of a two-tower run, keyed by the catalogue's (integer) item ids."""
    from recstack.retrieval.index import create_index

    run = _two_tower(run_dir)
    ids, vectors = embed_items(run.model, run.preprocessor, _run_source(run, "catalog", "items.parquet", catalog))
    options: dict[str, Any] = {}
    if backend == "faiss" and kind is not None:
        options["kind"] = kind
    elif backend == "milvus":
        if uri is None:
            raise ConfigError("--uri: a Milvus index needs a server address or a Milvus Lite file")
        options = {"uri": uri, "collection": collection, **({"index_type": kind} if kind else {})}
    index = create_index(backend, dim=vectors.shape[1], **options)
    try:
        index.add(np.asarray(ids, dtype=np.int64), vectors)
        index.save(output)
    finally:
        index.close()
    return len(ids)
