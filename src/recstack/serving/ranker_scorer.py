"""The ranker as served: ONNX Runtime when it exports and reproduces PyTorch, else eager.

Shape legend: C candidate rows of a ranker batch.

Measured on one request's 100 candidates (MovieLens-100K DIN, 1 thread, interleaved in one
process): eager 11.3 ms, torch.export 9.1 ms, ONNX Runtime 4.8 ms, once the two export
blockers in the model code are lifted (``docs/benchmarks.md``, Serving). Until then the export
fails and the ranker is served eagerly; nothing else changes.

The ranker is exported once at start-up over positional tensors (the batch's ids, sequences,
weights and dense values, in a fixed order, C dynamic) and used only if its probabilities match
``task.predict`` within 1e-5 on ``example``.

A multi-task ranker (its task has several heads) is exported with one output per head (each
target's probability and ``<condition>_and_<target>``), each checked against
``task.predict_heads``; its rank score is their :class:`~recstack.serving.blend.Blend` (default:
the product of the targets' probabilities).

Example::

    scorer = RankerScorer(model=run.model, task=task_from_run(run), example=batch)
    probs = scorer(batch)  # (C,) float32: the probability, or a multi-task ranker's blend
    rank_scores, heads = scorer.score(batch)  # heads: {head: (C,)} of a multi-task ranker, else {}
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.models.multi_task_base import is_funnel
from recstack.serving.blend import Blend
from recstack.tasks import SCORE_HEAD, Task

_KINDS = ("ids", "sequences", "weights", "dense")


class RankerScorer:
    """``(C,)`` float32 probabilities of a ranker batch through the fastest form that is exact.

    Args:
        model: the ranking model, ``model(batch) -> (C,)`` logits.
        task: its task (``predict``: probabilities; ``predict_heads`` of a multi-task ranker).
        example: a ranker batch to export with and to check the export on.
        onnx: try ONNX Runtime at all (False: always eager).
        blend: a multi-task ranker's rank score from its heads (None: the product of the targets'
            probabilities, ``p(click) * p(like | click)``; for a funnel model such as AITM, whose
            last step already is ``P(click and like)``, that last step's probability);
            ConfigError naming a head the ranker does not have.
    """

    def __init__(self, *, model: nn.Module, task: Task, example: Batch, onnx: bool = True, blend: Blend | None = None) -> None:
        self.model, self.task = model, task
        self.heads = tuple(task.heads)
        self.multi_head = self.heads != (SCORE_HEAD,)
        targets = tuple(getattr(task, "target_names", self.heads))
        if is_funnel(model):
            targets = targets[-1:]  # each step is over every row: the last one is P(every step)
        self.blend = (blend or Blend.default(targets)) if self.multi_head else None
        if self.blend is not None:
            self.blend.check(self.heads)
        self.spec = [(kind, name) for kind in _KINDS for name in getattr(example, kind)]
        self.session: tuple[Any, list[str]] | None = None
        self.failure: str | None = None  # why ONNX Runtime is not used
        if onnx and len(example):
            self.session, self.failure = _onnx_session(model, task, example, self.spec)
        self.backend = "onnxruntime" if self.session is not None else "eager"

    def __call__(self, batch: Batch) -> np.ndarray:
        """``(C,)`` rank scores: the probability, or a multi-task ranker's blend of its heads."""
        return self.score(batch)[0]

    def score(self, batch: Batch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(C,)`` rank scores and ``{head: (C,)}`` (a multi-task ranker's; empty otherwise)."""
        heads = self.head_scores(batch)
        if self.blend is None:
            return heads[SCORE_HEAD], {}
        return self.blend(heads), heads

    def head_scores(self, batch: Batch) -> dict[str, np.ndarray]:
        """``{head: (C,)}`` float32 (``{"score": ...}`` for a single-head ranker)."""
        if self.session is not None and [(k, n) for k in _KINDS for n in getattr(batch, k)] == self.spec:
            session, names = self.session
            feeds = {_input_name(kind, name): getattr(batch, kind)[name].numpy() for kind, name in self.spec if _input_name(kind, name) in names}
            return dict(zip(self.heads, session.run(None, feeds)))  # (C,) each
        with torch.inference_mode():
            return {name: values.float().numpy() for name, values in self.task.predict_heads(self.model, batch).items()}


class _Positional(nn.Module):
    """The ranker over positional tensors (exporters take tensors, not a Batch)."""

    def __init__(self, model: nn.Module, spec: list[tuple[str, str]], task: Task) -> None:
        super().__init__()
        self.model, self.spec, self.task = model, spec, task
        self.heads = tuple(task.heads)

    def forward(self, *tensors: Tensor) -> Tensor | tuple[Tensor, ...]:
        batch = Batch()
        for (kind, name), tensor in zip(self.spec, tensors):
            getattr(batch, kind)[name] = tensor
        if self.heads == (SCORE_HEAD,):
            return torch.sigmoid(self.model(batch).float())  # (C,) probabilities
        scores = self.task.scores(self.model(batch))  # type: ignore[attr-defined]  # multi-task: {head: (C,)}
        return tuple(scores[head] for head in self.heads)


def _onnx_session(model: nn.Module, task: Task, example: Batch, spec: list[tuple[str, str]]) -> tuple[tuple[Any, list[str]] | None, str | None]:
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnxruntime is not installed"
    positional = _Positional(model, spec, task).eval()
    heads = list(positional.heads)
    outputs = ["probs"] if heads == [SCORE_HEAD] else heads
    names = [_input_name(kind, name) for kind, name in spec]  # a weighted sequence has ids and weights under one name
    inputs = tuple(getattr(example, kind)[name] for kind, name in spec)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ranker.onnx"
        try:
            # the TorchScript exporter (the torch.export one needs onnxscript); a failed export
            # prints its whole graph, kept out of the server's output
            with torch.no_grad(), warnings.catch_warnings(), _quiet_stdout():
                warnings.simplefilter("ignore")
                torch.onnx.export(positional, inputs, str(path), input_names=names, output_names=outputs, dynamic_axes={n: {0: "C"} for n in names + outputs}, dynamo=False)
        except Exception as error:  # noqa: BLE001 - a ranker that does not export is served eagerly
            return None, f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = max(1, torch.get_num_threads())
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph_inputs = [i.name for i in session.get_inputs()]  # constant-folded inputs may be absent
    onnx_heads = session.run(None, {n: t.numpy() for n, t in zip(names, inputs) if n in graph_inputs})
    with torch.no_grad():
        eager = task.predict_heads(model, example)
    for head, onnx_probs in zip(heads, onnx_heads):
        expected = eager[head].float().numpy()
        if onnx_probs.shape != expected.shape or not np.allclose(onnx_probs, expected, rtol=0, atol=1e-5):
            return None, f"the ONNX Runtime scores of head {head!r} differ from PyTorch's by more than 1e-5"
    return (session, graph_inputs), None


def _input_name(kind: str, name: str) -> str:
    """The ONNX input of feature ``name``'s ``kind`` tensor (``sequences:tags``, ``weights:tags``)."""
    return f"{kind}:{name}"


@contextlib.contextmanager
def _quiet_stdout():
    """File descriptor 1 to /dev/null: the exporter's C++ side prints a failed graph there."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
