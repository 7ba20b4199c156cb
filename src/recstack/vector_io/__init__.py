"""Vector files keyed by id (NPY + ids, Parquet, word2vec text, JSON lines) and the in-memory
:class:`VectorTable`: the file formats pretrained vectors arrive in.

This sits below ``data`` and ``nn`` (the preprocessor and the embedding tables read pretrained
vectors through it) and above nothing but ``errors`` and ``schema``; ``recstack.pretrain`` (item2vec,
text encoders) writes these files.

Example::

    from recstack.vector_io import VectorTable, read_vectors, write_vectors
    write_vectors("items.parquet", VectorTable(ids=["a", "b"], vectors=vectors))
    table = read_vectors("items.parquet")            # ids, (N, D) float32 vectors
"""

from recstack.vector_io.files import infer_format, npy_paths, read_vectors, write_vectors
from recstack.vector_io.table import DuplicateIdError, VectorTable

__all__ = ["DuplicateIdError", "VectorTable", "infer_format", "npy_paths", "read_vectors", "write_vectors"]
