"""Progress bars over an evaluation pass: counted in rows (ranking) or in users (retrieval)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from recstack.data.batch import Batch

__all__ = ["progress_batches", "progress_counter"]


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


@contextmanager
def progress_counter(total: int | None, *, desc: str, unit: str, enabled: bool = True, file: Any = None) -> Iterator[Callable[[int], Any]]:
    """``with progress_counter(U, desc="evaluate valid", unit="user") as advance: advance(n)``.

    The same bar as ``progress_batches`` (off when ``file``, stderr by default, is not a
    terminal, everywhere when ``enabled`` is False, cleared when done) for passes that are not
    a stream of batches, such as full-corpus retrieval scoring a chunk of users at a time.
    """
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, dynamic_ncols=True, file=file, disable=None if enabled else True) as bar:
        yield bar.update
