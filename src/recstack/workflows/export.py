"""``recstack export / embed-items / embed-users / index``: a two-tower run's towers, vectors and
item index, written for serving.

``export_run`` writes ``RUN/export/{user,item}_tower.onnx`` and ``{user,item}_tower.pt`` (the
tower's state_dict) and refuses to finish unless onnxruntime reproduces PyTorch within ``atol``.

Item ids are the run's own: the item-id feature is read from the run (``item_id_feature``),
and its column's values, integers or strings such as ``"p463"``, key the vectors and the
index unchanged. The items come from the catalogue (``--catalog`` or the run's
``data.catalog``); a run without one (seed 001: events only) indexes the distinct items of its
training rows, each with the item features of its last row.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import torch

from recstack.atomic import atomic_path, write_json_atomic
from recstack.data.sources import DataSource
from recstack.errors import ConfigError, DataError
from recstack.export.onnx_towers import export_tower_onnx, onnx_max_abs_error
from recstack.export.retrieval_run import EMBED_BATCH_SIZE, item_id_column, item_id_feature, load_retrieval_run  # noqa: F401 (re-exported)
from recstack.export.run_folder import LoadedRun
from recstack.schema.specs import CategoricalFeature
from recstack.schema import Side
from recstack.workflows.retrieval import _dataset_file, embed_users, item_feature_names, user_feature_names

EXAMPLE_ROWS = 256
INDEX_SOURCE_NAME = "index_source.json"  # beside an index built from a run: which run, which ids


@dataclass(frozen=True)
class ItemCatalogue:
    """The items of a two-tower run, one row each, as the item index holds them.

    Attributes:
        feature: the run's item-id feature (``schema[feature].column`` holds the ids).
        column: the raw id column.
        ids: ``(N,)`` raw ids, int64 or an object array of str, unique.
        records: ``N`` rows holding the item tower's columns.
        source: where the rows came from, for messages.
    """

    feature: str
    column: str
    ids: np.ndarray
    records: pa.RecordBatch
    source: str

    def __len__(self) -> int:
        return len(self.ids)


def item_catalogue(run: LoadedRun, catalog: str | Path | None = None) -> ItemCatalogue:
    """The run's items: ``catalog`` (or the run's ``data.catalog``), one row per item; without
    one, the distinct items of the run's training rows (each with its last row's features)."""
    spec = catalog or (run.config.get("data") or {}).get("catalog") or _dataset_file(run.config, "items.parquet")
    derived = not spec
    source = DataSource.from_config(str(spec) if isinstance(spec, Path) else spec, key="catalog") if spec else _run_source(run, "train", "train.parquet", None)
    preprocessor = run.preprocessor
    feature_columns = run.preprocessor.schema.feature_columns(item_feature_names(run.model))
    candidates = [f.column for f in preprocessor.schema.by_side(Side.ITEM) if isinstance(f, CategoricalFeature)]
    available = set(source.columns_of(source.files()[0]))
    columns = [c for c in dict.fromkeys(candidates + feature_columns) if c in available]
    table = pa.concat_tables(pa.Table.from_batches([chunk.records]) for chunk in source.chunks(columns=columns)).combine_chunks()
    feature = item_id_feature(run, table)
    column = preprocessor.schema[feature].column
    where = ",".join(source.paths)
    if column not in table.column_names:
        raise DataError(f"no column {column!r} for the item-id feature {feature!r}", path=where, column=column)
    ids = table.column(column).to_numpy(zero_copy_only=False)
    if derived:  # events: keep each item's last row, items in order of first appearance
        _, last_from_end = np.unique(ids[::-1], return_index=True)
        keep = np.sort(len(ids) - 1 - last_from_end)
        table, ids = table.take(pa.array(keep)), ids[keep]
        where = f"the distinct {column!r} values of the training rows ({where})"
    elif len(np.unique(ids)) != len(ids):
        raise DataError(f"catalogue item ids in column {column!r} must be unique (one row per item; leave --catalog out to index the distinct items of the training rows)", path=where, column=column)
    records = table.to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema=table.schema)
    return ItemCatalogue(feature=feature, column=column, ids=ids, records=records, source=where)


@torch.no_grad()
def embed_catalogue(run: LoadedRun, catalogue: ItemCatalogue, *, batch_size: int = EMBED_BATCH_SIZE) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(b,)`` ids and ``(b, D)`` float32 item vectors, ``batch_size`` items at a time."""
    model, features = run.model, item_feature_names(run.model)
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, len(catalogue), batch_size):
        rows = catalogue.records.slice(start, batch_size)
        batch = run.preprocessor.transform(rows, features=features, with_label=False)
        vectors = model.encode_item(batch.to(device)).cpu().numpy().astype(np.float32)  # (b, D)
        yield catalogue.ids[start : start + batch_size], vectors


def _two_tower(run_dir: str | Path) -> LoadedRun:
    return load_retrieval_run(run_dir)  # ConfigError naming the run for a ranking run


def _run_source(run: LoadedRun, key: str, fallback_file: str, given: str | Path | None) -> DataSource:
    spec = given or (run.config.get("data") or {}).get(key) or _dataset_file(run.config, fallback_file)
    if not spec:
        raise ConfigError(f"--{key}: the run's config names no {key} file; pass one")
    return DataSource.from_config(str(spec) if isinstance(spec, Path) else spec, key=key)


def _example_batch(run: LoadedRun, source: DataSource | pa.RecordBatch, features: list[str]):  # -> Batch
    records = source if isinstance(source, pa.RecordBatch) else next(iter(source.chunks())).records
    return run.preprocessor.transform(records.slice(0, EXAMPLE_ROWS), features=features, with_label=False)


@torch.no_grad()
def export_run(run_dir: str | Path, *, catalog: str | Path | None = None, data: str | Path | None = None, atol: float = 1e-5) -> dict[str, Any]:
    """Both towers as weights + ONNX in ``RUN/export/``; returns the report written there."""
    run = _two_tower(run_dir)
    out = run.paths.exports
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"atol": atol}
    sides = {
        "user": (run.model.user_tower(), _example_batch(run, _run_source(run, "train", "train.parquet", data), user_feature_names(run.model))),
        "item": (run.model.item_tower(), _example_batch(run, item_catalogue(run, catalog).records, item_feature_names(run.model))),
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
    """``.parquet``: columns ``id_column`` and ``vector`` (fixed-size list; K fixed-size lists for
    ``(U, K, D)`` multi-interest users); ``.npy``: the vectors,
    with the ids in ``<stem>.ids.npy`` beside it (int64, or fixed-width unicode for string ids:
    never a pickled object array)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        with atomic_path(path.with_suffix(".ids.npy")) as tmp, open(tmp, "wb") as f:
            ids = np.asarray(ids)
            np.save(f, ids.astype(str) if ids.dtype == object else ids, allow_pickle=False)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, vectors, allow_pickle=False)
        return path
    if path.suffix.lower() not in (".parquet", ".pq"):
        raise ConfigError(f"--output: expected a .parquet or .npy file, got {str(path)!r}")
    import pyarrow.parquet as pq

    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[-1])
    if vectors.ndim == 3:  # K interests per user: a list of K vectors
        column = pa.FixedSizeListArray.from_arrays(column, vectors.shape[1])
    with atomic_path(path) as tmp:
        pq.write_table(pa.table({id_column: pa.array(ids), "vector": column}), tmp)
    return path


def embed_items_run(run_dir: str | Path, *, catalog: str | Path | None, output: str | Path) -> int:
    """Item vectors keyed by the run's own id column (its name and its values, ints or strings)."""
    run = _two_tower(run_dir)
    catalogue = item_catalogue(run, catalog)
    ids, vectors = _all(embed_catalogue(run, catalogue), run)
    write_embeddings(output, ids, vectors, id_column=catalogue.column)
    return len(ids)


def _all(chunks: Iterator[tuple[np.ndarray, np.ndarray]], run: LoadedRun) -> tuple[np.ndarray, np.ndarray]:
    parts = list(chunks)
    if not parts:
        raise DataError("no items to embed", path=str(run.paths.root))
    return np.concatenate([i for i, _ in parts]), np.concatenate([v for _, v in parts])


def embed_users_run(run_dir: str | Path, *, data: str | Path, output: str | Path, user_column: str = "user_id") -> int:
    run = _two_tower(run_dir)
    ids, vectors = embed_users(run.model, run.preprocessor, DataSource.from_config(str(data), key="data"), user_column=user_column)
    write_embeddings(output, ids, vectors, id_column=user_column)
    return len(ids)


@dataclass(frozen=True)
class IndexSummary:
    """What ``build_index_run`` wrote (also in ``index_source.json``, as ``as_dict`` gives it).

    Attributes:
        items: items indexed.
        backend: ``"exact"``, ``"faiss"`` or ``"milvus"``.
        id_feature / id_column: the run's item-id feature and the raw column keying the index.
        id_type: ``"int"`` or ``"str"``.
        output: the index folder.
    """

    items: int
    backend: str
    id_feature: str
    id_column: str
    id_type: str
    output: str

    def describe(self) -> str:
        """``400 items (milvus, keyed by post_id, string ids)``."""
        kind = "string" if self.id_type == "str" else "integer"
        return f"{self.items} items ({self.backend}, keyed by {self.id_column}, {kind} ids)"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def build_index_run(run_dir: str | Path, *, catalog: str | Path | None, backend: str, output: str | Path, kind: str | None = None, uri: str | None = None, collection: str = "items", progress: bool = True, progress_file: Any = None, batch_size: int = EMBED_BATCH_SIZE) -> IndexSummary:
    """The item index of a two-tower run, keyed by the run's own item ids (ints or strings).

    Embeds and adds ``batch_size`` items at a time under a tqdm bar (total: the items; hidden
    when ``progress_file``, stderr by default, is not a terminal, or with ``progress=False``). Writes the index to ``output``
    and, beside it, ``index_source.json`` (run, backend, id feature and column, id type, item
    count); returns the same as an ``IndexSummary``.
    """
    from recstack.retrieval.index import MilvusIndex, create_index
    from recstack.retrieval.index.ids import id_type_of

    run = _two_tower(run_dir)
    catalogue = item_catalogue(run, catalog)
    if not len(catalogue):
        raise DataError("no items to index", path=catalogue.source)
    id_type = id_type_of(catalogue.ids)
    options: dict[str, Any] = {"id_type": id_type}
    if backend == "faiss" and kind is not None:
        options["kind"] = kind
    elif backend == "milvus":
        if uri is None:
            raise ConfigError("--uri: a Milvus index needs a server address or a Milvus Lite file")
        options.update(uri=uri, collection=collection, **({"index_type": kind} if kind else {}))
    chunks = embed_catalogue(run, catalogue, batch_size=batch_size)
    first_ids, first_vectors = next(chunks)
    index = create_index(backend, dim=first_vectors.shape[1], **options)
    try:
        with _progress(len(catalogue), f"indexing {catalogue.column}", enabled=progress, file=progress_file) as advance:
            index.add(first_ids, first_vectors)  # IVF trains on the first batch: make it a big one
            advance(len(first_ids))
            for ids, vectors in chunks:
                index.add(ids, vectors)
                advance(len(ids))
        if isinstance(index, MilvusIndex):
            index.flush()  # Lite builds the ANN index over the loaded rows here
        index.save(output)
    finally:
        index.close()
    write_json_atomic(Path(output) / INDEX_SOURCE_NAME, {"run": str(Path(run_dir).resolve()), "backend": backend, "id_feature": catalogue.feature, "id_column": catalogue.column, "id_type": id_type.value, "items": len(catalogue), "items_from": catalogue.source})
    return IndexSummary(items=len(catalogue), backend=backend, id_feature=catalogue.feature, id_column=catalogue.column, id_type=id_type.value, output=str(output))


@contextmanager
def _progress(total: int, label: str, *, enabled: bool, file: Any = None) -> Iterator[Callable[[int], Any]]:
    """``with _progress(total, label) as advance: advance(n)``: a tqdm bar as in training
    (``disable=None``: hidden when ``file``, stderr by default, is not a terminal)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=label, unit="item", dynamic_ncols=True, file=file, disable=None if enabled else True)
    try:
        yield bar.update
    finally:
        bar.close()
