"""``recstack evaluate`` and ``recstack predict`` on new files through a run's saved preprocessor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from recstack.atomic import atomic_path, write_json_atomic
from recstack.data.loader import BatchStream, LoaderConfig
from recstack.data.sources import DataSource
from recstack.errors import ConfigError, RecstackError
from recstack.evaluation.ranking_evaluator import collect_heads, collect_predictions
from recstack.export.run_folder import LoadedRun, load_run, task_from_run
from recstack.tasks import SCORE_HEAD, TaskType
from recstack.workflows.tasks import EVAL_BATCH_SIZE, evaluate_source, model_features_read


def evaluate_run(
    run_dir: str | Path,
    data: DataSource,
    *,
    threads: int = 1,
    write: bool = True,
    catalog: DataSource | str | None = None,
    seen: DataSource | str | None = None,
) -> dict[str, Any]:
    """Metrics of a trained run on ``data``; added to the run's metrics.json under the file name.

    ``catalog`` (the items to rank) and ``seen`` (items excluded per user) override a retrieval
    run's ``data.catalog`` / ``data.seen``; a ranking run refuses them.
    """
    torch.set_num_threads(threads)
    run = load_run(run_dir)
    if run.task.type is TaskType.BINARY:
        if catalog is not None or seen is not None:
            raise ConfigError("--catalog and --seen apply to retrieval runs; this run ranks rows (task type binary)")
        metrics = evaluate_source(run.model, task_from_run(run), run.preprocessor, data, features=run_features_read(run, data))
        run.preprocessor.warn_truncated()
    else:
        from recstack.workflows.retrieval import evaluate_retrieval_run

        metrics = evaluate_retrieval_run(run, data, catalog=catalog, seen=seen)
    if write:
        existing = _read_json(run.paths.metrics)
        existing.setdefault("evaluations", {})[",".join(data.paths)] = metrics
        write_json_atomic(run.paths.metrics, existing)
    return metrics


def predict_run(run_dir: str | Path, data: DataSource, output: str | Path, *, threads: int = 1) -> int:
    """Writes one probability per input row (CSV or Parquet by suffix), atomically; returns the
    row count. A multi-task run writes one column per head (``click``, ``like``, ``click_and_like``). A score that is not a number is never written: the whole output is refused."""
    torch.set_num_threads(threads)
    run = load_run(run_dir)
    columns = score_heads(run, data)  # {"score": (N,)}, or one column per head of a multi-task run
    run.preprocessor.warn_truncated()
    for probs in columns.values():
        _check_finite(probs, run_dir, data, output)
    table = pa.table({name: pa.array(values.astype(np.float32)) for name, values in columns.items()})
    probs = next(iter(columns.values()))
    output = Path(output)
    with atomic_path(output) as tmp:
        if output.suffix.lower() in (".parquet", ".pq"):
            pq.write_table(table, tmp)
        else:
            pacsv.write_csv(table, tmp)
    return len(probs)


def run_features_read(run: LoadedRun, data: DataSource) -> tuple[str, ...] | None:
    """The features a saved ranking run's model reads (:func:`model_features_read`): a file to
    score needs only their columns; None (every feature) for runs without a saved model name."""
    name = run.model_spec.get("name")
    if not name:
        return None
    return model_features_read(name, run.model_spec.get("params", {}), run.model, run.preprocessor.schema, data)


def score_heads(run: LoadedRun, data: DataSource) -> dict[str, np.ndarray]:
    """``{head: (N,)}`` of every row in file order: ``score`` of a single-head run, each target
    (and ``<condition>_and_<target>``) of a multi-task run."""
    task = task_from_run(run)
    if task.heads == (SCORE_HEAD,):
        return {SCORE_HEAD: score_rows(run, data)}
    stream = BatchStream(source=data, preprocessor=run.preprocessor, config=LoaderConfig(batch_size=EVAL_BATCH_SIZE),
                         rank=0, world_size=1, with_label=False, features=run_features_read(run, data))  # fmt: skip
    return collect_heads(run.model, task, stream)[1]


def score_rows(run: LoadedRun, data: DataSource) -> np.ndarray:
    """``(N,)`` probabilities of every row, in file order; a label column, if any, is not read."""
    stream = BatchStream(
        source=data,
        preprocessor=run.preprocessor,
        config=LoaderConfig(batch_size=EVAL_BATCH_SIZE),
        rank=0,
        world_size=1,
        with_label=False,  # scores do not depend on labels: a file's bad labels do not stop predict
        features=run_features_read(run, data),
    )
    return collect_predictions(run.model, task_from_run(run), stream).probs


def _check_finite(probs: np.ndarray, run_dir: str | Path, data: DataSource, output: str | Path) -> None:
    bad = ~np.isfinite(probs)
    if bad.any():
        raise RecstackError(
            f"{int(bad.sum())} of {len(probs)} scores of run {str(run_dir)!r} on {', '.join(data.paths)} are not numbers "
            f"(NaN), the first at output row {int(np.flatnonzero(bad)[0]) + 1}; nothing was written to {str(output)!r}. "
            "The model's weights or its inputs are not finite: check the run's model.pt, or the data "
            "with `recstack data` (numeric features reject NaN/inf unless on_invalid says otherwise)"
        )


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
