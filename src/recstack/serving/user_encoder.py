"""The retrieval user tower as served: ONNX Runtime when it reproduces PyTorch, else eager.

Shape legend: B requests, D vector dim.

For one request the eager tower costs ~0.3-0.6 ms of PyTorch dispatch and ONNX Runtime
~0.04 ms (``benchmarks/serving.py``, user_tower). The tower is exported once at start-up
(padded lookups with a masked mean, no EmbeddingBag loop, see ``export/onnx_towers.py``) and
used only if it matches ``encode_user`` within 1e-5 on ``example``; otherwise, or without
onnxruntime, ``encode_user`` serves.

Example::

    encoder = UserEncoder(model, example=batch)  # batch: transformed user rows
    vectors = encoder(batch)                      # (B, D) float32
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.models.retrieval_contract import RetrievalModel, require_retrieval_model


class UserEncoder:
    """``(B, D)`` user vectors of a transformed batch, through the fastest form that is exact.

    Args:
        model: a retrieval model (``encode_user``, and ``user_tower()`` to export); anything
            else is a ConfigError.
        example: transformed user rows to export with and to check the export on.
        onnx: try ONNX Runtime at all (False: always eager).
    """

    def __init__(self, model: nn.Module, *, example: Batch, onnx: bool = True) -> None:
        self.model: RetrievalModel = require_retrieval_model(model, where="the user encoder")
        self.session = None
        self.backend = "eager"
        if onnx and len(example):
            self.session = _onnx_session(model, example)
            self.backend = "onnxruntime" if self.session is not None else "eager"

    def __call__(self, batch: Batch) -> np.ndarray:
        if self.session is None:
            with torch.inference_mode():
                return self.model.encode_user(batch).numpy()  # (B, D)
        session, names = self.session
        inputs = self.model.user_tower().inputs_from_batch(batch)
        (vectors,) = session.run(None, {n: t.numpy() for n, t in inputs.items() if n in names})
        return vectors  # (B, D)


def _onnx_session(model: RetrievalModel, example: Batch) -> tuple[object, set[str]] | None:
    try:
        import onnxruntime as ort

        from recstack.export.onnx_towers import export_tower_onnx
    except ImportError:
        return None
    tower = model.user_tower()
    inputs = tower.inputs_from_batch(example)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "user_tower.onnx"
        try:
            export_tower_onnx(tower, inputs, path)
        except Exception:  # noqa: BLE001 - a tower that does not export is served eagerly
            return None
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = max(1, torch.get_num_threads())
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}  # constant-folded inputs may be absent
    (onnx_vectors,) = session.run(None, {n: t.numpy() for n, t in inputs.items() if n in names})
    with torch.no_grad():
        eager = model.encode_user(example).numpy()
    if onnx_vectors.shape != eager.shape or not np.allclose(onnx_vectors, eager, rtol=0, atol=1e-5):
        return None
    return session, names
