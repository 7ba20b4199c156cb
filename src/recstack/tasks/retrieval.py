"""Retrieval tasks: losses for two-tower models whose ``forward`` returns unit vectors.

This module gathers the retrieval tasks and their named steps under one import path; each
lives in its own module:

- :mod:`recstack.tasks.retrieval_steps`: ``apply_temperature``, ``apply_logq_correction``,
  ``mask_accidental_hits``, ``scaled_cosine``, ``count_item_rows``.
- :mod:`recstack.tasks.in_batch_softmax`: :class:`InBatchSoftmaxTask`.
- :mod:`recstack.tasks.pointwise`: :class:`PointwiseTask`.
- :mod:`recstack.tasks.negative_sampling`: :class:`NegativeSamplingTask`,
  :class:`NegativeDistribution`.
"""

from recstack.tasks.in_batch_softmax import InBatchSoftmaxTask
from recstack.tasks.negative_sampling import NegativeDistribution, NegativeSamplingTask
from recstack.tasks.pointwise import PointwiseTask
from recstack.tasks.retrieval_steps import (
    FrequencyAwareTask,
    apply_logq_correction,
    apply_temperature,
    count_item_rows,
    mask_accidental_hits,
    scaled_cosine,
)

__all__ = [
    "FrequencyAwareTask",
    "InBatchSoftmaxTask",
    "NegativeDistribution",
    "NegativeSamplingTask",
    "PointwiseTask",
    "apply_logq_correction",
    "apply_temperature",
    "count_item_rows",
    "mask_accidental_hits",
    "scaled_cosine",
]
