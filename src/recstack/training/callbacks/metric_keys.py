"""Which logged keys are model metrics (plotted, compared) and which are bookkeeping.

An evaluation returns metrics (``auc``, ``logloss``, ``recall@10`` ...) beside bookkeeping
about the data it read (``count`` rows, ``users``, ``positive_rate``, ``skipped_bad_rows``).
Bookkeeping does not change from epoch to epoch and lives on another scale (10,000 rows beside
an AUC of 0.75), so plots and epoch summaries leave it out. The rule is a deny list: a key is
bookkeeping when its name is one of :data:`BOOKKEEPING_WORDS` or ends in ``_<word>`` of one, or it
starts with ``num_``/``n_``; every other key is a metric. A multi-task run's per-target keys follow the
same rule (``click_auc`` is a metric, ``click_count`` and ``click_positive_rate`` are not).
"""

from __future__ import annotations

__all__ = ["BOOKKEEPING_WORDS", "display_name", "is_metric"]

BOOKKEEPING_WORDS = frozenset(
    {"count", "rows", "users", "queries", "items", "samples", "seconds", "positive_rate", "skipped_bad_rows"}
)

# Names as a reader expects them on a plot; others are shown as logged.
_DISPLAY = {
    "auc": "AUC",
    "gauc": "GAUC (AUC per group)",
    "logloss": "log loss",
    "accuracy": "accuracy",
    "mrr": "MRR",
    "rmse": "RMSE",
    "mae": "MAE",
    "loss": "loss",
}


def is_metric(name: str) -> bool:
    """Whether ``name`` (without its ``eval_`` prefix) is a model metric, not bookkeeping.

    Example:
        >>> [is_metric(k) for k in ("auc", "recall@10", "count", "positive_rate", "eval_rows")]
        [True, True, False, False, False]
        >>> [is_metric(k) for k in ("eval_click_auc", "like_rmse", "click_positive_rate", "like_outside_condition_rows")]
        [True, True, False, False]
    """
    name = name.removeprefix("eval_")
    if name.startswith(("num_", "n_")):
        return False
    return not any(name == word or name.endswith(f"_{word}") for word in BOOKKEEPING_WORDS)  # click_positive_rate too


def display_name(name: str) -> str:
    """``"auc"`` → ``"AUC"``, ``"ndcg@10"`` → ``"NDCG@10"``, ``"click_auc"`` → ``"click AUC"``,
    others unchanged."""
    name = name.removeprefix("eval_")
    if name in _DISPLAY:
        return _DISPLAY[name]
    head, _, metric = name.rpartition("_")
    if head and metric in _DISPLAY and metric != "loss":  # a multi-task target's metric
        return f"{head} {_DISPLAY[metric]}"
    base, at, k = name.partition("@")
    if at and base in ("ndcg", "map"):
        return f"{base.upper()}@{k}"
    return name
