"""Export one retrieval tower (user or item) to ONNX and check it against PyTorch in onnxruntime.

Shape legend: B batch (a dynamic axis in the exported graph), L sequence length, D vector dim.

A tower is an ``nn.Module`` whose ``forward`` takes plain tensors in a fixed positional order,
named by its ``input_names`` (``recstack.models.dssm.Tower``: ids ``(B,)``, sequences ``(B, L)``,
sequence weights ``(B, L)``, dense ``(B,)`` / ``(B, D)``) and returns ``(B, D)`` vectors. Towers
pool sequences as a padded lookup plus a masked mean, never ``nn.EmbeddingBag`` with offsets,
which ONNX can only express as a slow per-bag loop. Only the batch axis is dynamic: ``L`` is a
feature's fixed ``maxlen`` after preprocessing.

Example::

    tower = model.user_tower()
    inputs = tower.inputs_from_batch(batch)           # {name: tensor}, in input_names order
    export_tower_onnx(tower, inputs, "run/user_tower.onnx")
    assert onnx_matches(tower, "run/user_tower.onnx", inputs)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from recstack.atomic import atomic_path

__all__ = ["OUTPUT_NAME", "export_tower_onnx", "onnx_max_abs_error", "onnx_matches"]

OUTPUT_NAME = "vectors"
DEFAULT_OPSET = 17


def _named_inputs(tower: nn.Module, inputs: Mapping[str, Tensor] | Sequence[Tensor]) -> dict[str, Tensor]:
    """Inputs keyed by name, in the tower's positional order."""
    names = getattr(tower, "input_names", None)
    if isinstance(inputs, Mapping):
        if names is None:
            return dict(inputs)
        missing = [n for n in names if n not in inputs]
        if missing:
            raise KeyError(f"tower inputs {missing} are missing; the tower takes {list(names)}")
        return {n: inputs[n] for n in names}
    inputs = tuple(inputs)
    if names is None:
        names = tuple(f"input_{i}" for i in range(len(inputs)))
    if len(names) != len(inputs):
        raise ValueError(f"the tower takes {len(names)} inputs {list(names)}, got {len(inputs)}")
    return dict(zip(names, inputs))


def export_tower_onnx(
    tower: nn.Module,
    example_inputs: Mapping[str, Tensor] | Sequence[Tensor],
    path: str | Path,
    *,
    opset_version: int = DEFAULT_OPSET,
) -> Path:
    """Write ``tower`` as an ONNX graph with a dynamic batch axis, atomically.

    Args:
        tower: a module ``forward(*tensors) -> (B, D)``; exported in eval mode (batch norm uses
            its running statistics, dropout is off), its previous mode restored afterwards.
        example_inputs: ``{name: tensor}`` or a tuple in the tower's positional order; the
            names become the graph's input names (the tower's ``input_names`` when it has them).
        path: the ``.onnx`` file to write; a crash mid-write leaves any previous file intact.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    named = _named_inputs(tower, example_inputs)
    dynamic_axes = {name: {0: "batch"} for name in named}
    dynamic_axes[OUTPUT_NAME] = {0: "batch"}
    was_training = tower.training
    tower.eval()
    try:
        with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            # the TorchScript exporter: the torch.export one needs onnxscript, an extra dependency
            warnings.simplefilter("ignore", category=DeprecationWarning)
            torch.onnx.export(
                tower,
                tuple(named.values()),
                str(tmp),
                input_names=list(named),
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes,
                opset_version=opset_version,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        tower.train(was_training)
    return Path(path)


def onnx_max_abs_error(tower: nn.Module, path: str | Path, inputs: Mapping[str, Tensor] | Sequence[Tensor]) -> float:
    """Largest ``|onnxruntime - PyTorch|`` over the tower's ``(B, D)`` output on ``inputs``."""
    import onnxruntime as ort  # optional dependency: recstack[export]

    named = _named_inputs(tower, inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_inputs = {i.name for i in session.get_inputs()}  # constant-folded inputs may be absent
    feeds = {name: t.detach().cpu().numpy() for name, t in named.items() if name in graph_inputs}
    (onnx_vectors,) = session.run([OUTPUT_NAME], feeds)  # (B, D)
    was_training = tower.training
    tower.eval()
    try:
        with torch.no_grad():
            torch_vectors = tower(*named.values()).cpu().numpy()  # (B, D)
    finally:
        tower.train(was_training)
    if onnx_vectors.shape != torch_vectors.shape:
        return float("inf")
    return float(np.max(np.abs(onnx_vectors - torch_vectors), initial=0.0))


def onnx_matches(
    tower: nn.Module, path: str | Path, inputs: Mapping[str, Tensor] | Sequence[Tensor], *, atol: float = 1e-5
) -> bool:
    """True when the exported graph at ``path`` reproduces ``tower(inputs)`` within ``atol``."""
    return onnx_max_abs_error(tower, path, inputs) <= atol
