"""Bundled data builders writing Parquet for recstack's feature pipeline.

Conventions: id columns int64; labels float32 0/1; multi-valued fields are Arrow list columns
(list<int64> item ids, list<string> genres), oldest first for behaviour sequences; a weighted
multi-valued field is a string of ``"id:weight"`` pairs joined by ``","``.
"""

from recstack.datasets.movielens import build_ctr, build_retrieval
from recstack.datasets.movielens_raw import MovieLensRaw, load_raw
from recstack.datasets.retrieval_split import RetrievalSplit, leave_last_out
# the generators come from their own modules, so `python -m recstack.datasets.synthetic` runs cleanly
from recstack.datasets.synthetic_criteo import generate_criteo_like
from recstack.datasets.synthetic_ctr import generate_ctr
from recstack.datasets.synthetic_retrieval import generate_retrieval

__all__ = [
    "MovieLensRaw",
    "RetrievalSplit",
    "build_ctr",
    "build_retrieval",
    "generate_criteo_like",
    "generate_ctr",
    "generate_retrieval",
    "leave_last_out",
    "load_raw",
]
