"""Pretrained vectors: vector files, item2vec on behaviour sequences, text embeddings.

Importing this package is cheap: gensim and sentence-transformers are imported only when
:func:`train_item2vec` or the text encoder first runs (extras ``recstack[vectors]`` and
``recstack[text]``).

Example::

    from recstack.pretrain import read_vectors, train_item2vec, write_vectors
    write_vectors("item2vec.parquet", train_item2vec(sequences, dim=64))
    table = read_vectors("item2vec.parquet")            # VectorTable: ids, (N, D) vectors
    vectors, found = table.lookup(["item_7", "item_9"])
"""

from recstack.pretrain.cli import encode_text_main, item2vec_main
from recstack.pretrain.item2vec import event_sequences, mean_pool, train_item2vec
from recstack.pretrain.text_encoder import (
    default_text_model_path,
    encode_text_column,
    encode_texts,
    load_text_model,
)
from recstack.vector_io import DuplicateIdError, VectorTable, infer_format, npy_paths, read_vectors, write_vectors
from recstack.schema import VectorFormat

__all__ = [
    "DuplicateIdError",
    "VectorFormat",
    "VectorTable",
    "default_text_model_path",
    "encode_text_column",
    "encode_text_main",
    "encode_texts",
    "event_sequences",
    "infer_format",
    "item2vec_main",
    "load_text_model",
    "mean_pool",
    "npy_paths",
    "read_vectors",
    "train_item2vec",
    "write_vectors",
]
