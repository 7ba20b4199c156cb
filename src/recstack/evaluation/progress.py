"""A progress bar over an evaluation pass, counted in rows."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from recstack.data.batch import Batch

__all__ = ["progress_batches"]


def progress_batches(
    batches: Iterable[Batch],
    *,
    total_rows: int | None,
    desc: str,
    enabled: bool = True,
    file: Any = None,
) -> Iterator[Batch]:
    """Yield ``batches`` unchanged while a tqdm bar counts their rows.

    With ``total_rows`` (Parquet metadata: ``DataSource.num_rows()``) the bar shows the total,
    the rate and the ETA; without it, the rows so far and the rate. Like the training bar it is
    off by itself when stderr is not a terminal, and everywhere when ``enabled`` is False (the
    trainer's ``progress: false``); it is cleared when the pass ends (``leave=False``).

    Args:
        batches: the evaluation batches, e.g. a ``BatchStream``.
        total_rows: rows the pass will read, or None when unknown.
        desc: the bar's label, e.g. ``"evaluate valid"``.
        enabled: False hides the bar everywhere.
        file: where the bar is drawn (default: stderr).
    """
    from tqdm.auto import tqdm

    with tqdm(
        total=total_rows,
        desc=desc,
        unit="row",
        unit_scale=True,
        leave=False,
        dynamic_ncols=True,
        file=file,
        disable=None if enabled else True,  # None: off when not a TTY
    ) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))
