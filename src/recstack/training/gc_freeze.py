"""Keep Python's full garbage collections off the training loop's objects of set-up.

A process that has imported torch, pyarrow and a model holds ~340,000 Python objects (modules,
functions, the dataset's metadata), nearly all alive to its end. CPython's oldest-generation
collection walks every one of them: ~170 ms on this project's machines, and one fell inside
every 3-epoch ESMM and SASRec benchmark run (5-6 % of the clock). ``gc.freeze()`` moves the
objects alive when training starts to a permanent generation that collections skip; objects
created during training are collected as before. ``fit`` unfreezes them at its end, so a
process that trains several models (a search) collects its set-up garbage between fits.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

__all__ = ["set_up_objects_frozen"]


@contextlib.contextmanager
def set_up_objects_frozen(enabled: bool = True) -> Iterator[None]:
    """Freeze the objects alive now for the body (``gc.freeze``), unfreeze them after.

    A no-op when not ``enabled`` or when the caller has frozen objects already (its freeze is
    left as it is, not undone here).
    """
    freezing = enabled and gc.get_freeze_count() == 0
    if freezing:
        gc.freeze()
    try:
        yield
    finally:
        if freezing:
            gc.unfreeze()
