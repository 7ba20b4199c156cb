"""Bundled data builders writing Parquet for recstack's feature pipeline.

Conventions: id columns int64; labels float32 0/1; multi-valued fields are Arrow list columns
(list<int64> item ids, list<string> genres), oldest first for behaviour sequences; a weighted
multi-valued field is a string of ``"id:weight"`` pairs joined by ``","``.
"""

from recstack.datasets.movielens import build_ctr, build_retrieval
from recstack.datasets.movielens_raw import MovieLensRaw, load_raw
from recstack.datasets.multi_task import build_multitask, generate_multitask
from recstack.datasets.movielens_sequences import build_sequences
from recstack.datasets.retrieval_split import RetrievalSplit, leave_last_out
from recstack.datasets.sequence_split import SequenceSplit, SequenceSplitSpec, split_sequences, write_sequence_split
# the generators come from their own modules, so `python -m recstack.datasets.synthetic` runs cleanly
from recstack.datasets.synthetic_criteo import generate_criteo_like
from recstack.datasets.synthetic_ctr import generate_ctr
from recstack.datasets.synthetic_retrieval import generate_retrieval
from recstack.datasets.synthetic_sequences import generate_sequence_events, generate_sequences

__all__ = [
    "MovieLensRaw",
    "RetrievalSplit",
    "SequenceSplit",
    "SequenceSplitSpec",
    "build_ctr",
    "build_multitask",
    "build_retrieval",
    "build_sequences",
    "generate_criteo_like",
    "generate_multitask",
    "generate_ctr",
    "generate_retrieval",
    "generate_sequence_events",
    "generate_sequences",
    "leave_last_out",
    "load_raw",
    "split_sequences",
    "write_sequence_split",
]
