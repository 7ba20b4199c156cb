"""item2vec: skip-gram with negative sampling over users' item sequences (gensim Word2Vec).

Items a user touched close together in time get close vectors (Barkan & Koenigstein, 2016).
The vectors can initialise an item embedding table, and :func:`mean_pool` turns a user's
history into a user vector.

Shape legend: B users (lists), V flattened history values, N items in the table, D dim.

Example::

    table = train_item2vec("events.parquet", user_column="user_id", item_column="item_id",
                           time_column="timestamp", dim=64)
    write_vectors("item2vec.parquet", table)
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.pretrain._columns import present, read_columns
from recstack.vector_io.table import VectorTable

Sequences = Iterable[Sequence[Union[str, int]]]
IdLists = Union[Sequence[Sequence[Union[str, int]]], pa.ListArray, pa.LargeListArray, pa.ChunkedArray]


def train_item2vec(
    sequences: Sequences | str | os.PathLike[str],
    *,
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str = "timestamp",
    dim: int = 128,
    window: int = 5,
    min_count: int = 1,
    negative: int = 5,
    epochs: int = 10,
    sg: int = 1,
    sample: float = 1e-3,
    seed: int = 0,
    workers: int = 1,
) -> VectorTable:
    """Train item vectors with gensim's Word2Vec (negative sampling, no hierarchical softmax).

    Args:
        sequences: item id sequences (ids become strings), or the path of a Parquet / CSV
            event table, grouped into one time-ordered sequence per user
            (see :func:`event_sequences`).
        user_column, item_column, time_column: the event table's columns (path input only).
        dim: ``D``, the vector dim.
        window: the largest distance between two items of a sequence that form a pair.
        min_count: items seen fewer times get no vector.
        negative: negative samples per positive pair.
        epochs: passes over the sequences.
        sg: 1 for skip-gram (item2vec), 0 for CBOW.
        sample: down-sampling threshold of frequent items (gensim's ``sample``; 0 keeps all).
        seed: seeds the initial vectors and the negative / window sampling.
        workers: training threads. Results are reproducible only with ``workers=1``: thread
            scheduling orders the updates otherwise. gensim 4 seeds its vectors from ``seed``
            with NumPy's generator, so ``PYTHONHASHSEED`` does not matter to it (older gensim
            hashed ids with Python's salted ``hash``: set ``PYTHONHASHSEED`` there).

    Returns:
        A :class:`VectorTable` of the items seen ``min_count`` times or more, most frequent
        first, ``(N, D)``.
    """
    try:
        from gensim.models import Word2Vec
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("train_item2vec needs gensim: pip install 'recstack[vectors]'") from error

    if isinstance(sequences, (str, os.PathLike)):
        corpus = event_sequences(sequences, user_column=user_column, item_column=item_column, time_column=time_column)
    else:
        # gensim walks the corpus once per epoch (plus once for the vocabulary): keep it in memory.
        corpus = [list(map(str, sequence)) for sequence in sequences]
    model = Word2Vec(
        vector_size=dim,
        window=window,
        min_count=min_count,
        negative=negative,
        hs=0,
        sg=sg,
        sample=sample,
        epochs=epochs,
        seed=seed,
        workers=workers,
    )
    model.build_vocab(corpus)
    if len(model.wv) == 0:
        raise ValueError(f"no item occurs min_count={min_count} times in {len(corpus)} sequences")
    model.train(corpus, total_examples=model.corpus_count, epochs=model.epochs)
    return VectorTable(ids=list(model.wv.index_to_key), vectors=model.wv.vectors)


def event_sequences(
    path: str | os.PathLike[str], *, user_column: str, item_column: str, time_column: str
) -> list[list[str]]:
    """One list of item ids (as strings) per user, ordered by time, from an event table.

    Rows are sorted by ``(user, time)`` with a stable sort, so events with equal times keep
    their file order; rows with a null or empty user or item are dropped, null times sort
    last. CSV ids are read as text (``"007"`` stays ``"007"``), as the preprocessor reads them::

        #  user  item  time          ->  users sorted: a a b    boundaries: [2]
        #  b     9     1                 sequences:    [["3", "7"], ["9"]]
        #  a     7     5
        #  a     3     2
    """
    table = read_columns(path, [user_column, item_column, time_column], id_columns=[user_column, item_column])
    table = table.filter(pc.and_(present(table.column(user_column)), present(table.column(item_column))))
    if table.num_rows == 0:
        return []
    order = pc.sort_indices(table, sort_keys=[(user_column, "ascending"), (time_column, "ascending")])
    users = pc.take(table.column(user_column), order).combine_chunks()  # (E,) sorted by user
    items = pc.cast(pc.take(table.column(item_column), order), pa.string()).combine_chunks()
    new_user = np.asarray(pc.not_equal(users[1:], users[:-1]), dtype=bool)  # (E - 1,)
    starts = np.flatnonzero(new_user) + 1
    item_values = items.to_numpy(zero_copy_only=False)  # (E,) object array of str
    return [chunk.tolist() for chunk in np.split(item_values, starts)]


def mean_pool(table: VectorTable, id_lists: IdLists) -> tuple[np.ndarray, np.ndarray]:
    """The mean vector of each list's ids that ``table`` knows.

    Ids without a vector (and nulls) are ignored; a list with no known id gets a zero vector.
    The lists are flattened once and summed per list with ``np.add.reduceat``::

        #  lists     ["a", "zz", "b"]   []      ["b"]
        #  values    [a, zz, b, b]      parents [0, 0, 0, 2]     (zz unknown: dropped)
        #  counts    [2, 0, 1]          vectors [(a+b)/2, 0, b]

    Args:
        table: the item vectors, ``(N, D)``.
        id_lists: ``B`` lists of ids, as Python sequences or an Arrow list array.

    Returns:
        ``(B, D)`` float32 mean vectors and ``(B,)`` int64 counts of the ids that had a vector.

    Example:
        >>> table = VectorTable(ids=["a", "b"], vectors=np.array([[1.0, 0.0], [0.0, 1.0]]))
        >>> vectors, counts = mean_pool(table, [["a", "zz", "b"], [], ["b"]])
        >>> vectors.tolist(), counts.tolist()
        ([[0.5, 0.5], [0.0, 0.0], [0.0, 1.0]], [2, 0, 1])
    """
    lists = _as_list_array(id_lists)
    num_lists = len(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)  # (V,)
    rows = table.rows(pc.list_flatten(lists))  # (V,), -1 where unknown
    found = rows >= 0
    parents, rows = parents[found], rows[found]  # still grouped by list, in list order
    counts = np.bincount(parents, minlength=num_lists).astype(np.int64)  # (B,)
    sums = np.zeros((num_lists, table.dim), dtype=np.float64)  # (B, D)
    if rows.size:
        starts = np.cumsum(counts) - counts  # (B,) first found value of each list
        nonempty = counts > 0
        sums[nonempty] = np.add.reduceat(table.vectors[rows].astype(np.float64), starts[nonempty], axis=0)
    vectors = sums / np.maximum(counts, 1)[:, None]  # (B, D)
    return vectors.astype(np.float32), counts


def _as_list_array(id_lists: IdLists) -> pa.Array:
    if isinstance(id_lists, pa.ChunkedArray):
        id_lists = id_lists.combine_chunks()
    if isinstance(id_lists, pa.Array):
        if not (pa.types.is_list(id_lists.type) or pa.types.is_large_list(id_lists.type)):
            raise TypeError(f"id_lists must be a list array, got Arrow type {id_lists.type}")
        return id_lists
    id_lists = list(id_lists)
    if not id_lists:
        return pa.array([], type=pa.list_(pa.string()))
    try:
        return pa.array(id_lists)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # Mixed str / int ids: Arrow cannot infer one value type, so convert them here.
        return pa.array([[None if v is None else str(v) for v in ids] for ids in id_lists], type=pa.list_(pa.string()))
