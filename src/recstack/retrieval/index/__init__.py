"""Vector indexes with one contract: ``add / upsert / delete / search(queries, k, exclude)``.

Backends (the ``backend`` name for ``create_index``):

* ``"exact"``  ``ExactIndex``: brute force with torch, the reference.
* ``"faiss"``  ``FaissIndex``: flat, HNSW or IVF; needs ``pip install 'recstack[vectors]'``.
* ``"milvus"`` ``MilvusIndex``: a Milvus server or Milvus Lite file; needs
  ``pip install 'recstack[milvus]'``.

Ids are the caller's, integers or strings, and come back in the same type (``ids.py``:
padding is -1 or None, ``found_mask`` tells hits from padding for both).

faiss and pymilvus are imported only when such an index is built, so this package imports
without them; every backend is registered here either way.

>>> import numpy as np
>>> index = create_index("exact", dim=2)
>>> index.add(np.array([3, 4]), np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
>>> index.search(np.array([[0.0, 1.0]], dtype=np.float32), k=1)[1].tolist()
[[4]]
>>> named = create_index("exact", dim=2)
>>> named.add(np.array(["p463", "p7"]), np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
>>> named.search(np.array([[0.0, 1.0]], dtype=np.float32), k=3)[1].tolist()
[['p7', 'p463', None]]
"""

from recstack.retrieval.index.base import (
    VectorIndex,
    available_backends,
    create_index,
    load_index,
    register_index,
)
from recstack.retrieval.index.exact import ExactIndex
from recstack.retrieval.index.faiss_index import FaissIndex, FaissKind
from recstack.retrieval.index.ids import IdType, found_mask
from recstack.retrieval.index.milvus import MilvusIndex, MilvusIndexType

__all__ = [
    "ExactIndex",
    "FaissIndex",
    "FaissKind",
    "IdType",
    "MilvusIndex",
    "MilvusIndexType",
    "VectorIndex",
    "available_backends",
    "create_index",
    "found_mask",
    "load_index",
    "register_index",
]
