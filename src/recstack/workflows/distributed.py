"""Training with several processes: PyTorch's launcher, DistributedDataParallel, exact evaluation.

``recstack train CONFIG --nproc N`` calls :func:`launch`, which hands the command to PyTorch's
own launcher (``torch.distributed.run``, the code behind ``torchrun``). Each worker runs
``recstack train CONFIG`` with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set, and ``train_run``
then uses this module:

* :func:`init_from_env` joins the process group (gloo on CPU, NCCL on CUDA, one GPU per
  ``LOCAL_RANK``).
* :class:`DistributedTraining` wraps the model in DDP and gives the Trainer a task whose loss
  runs the forward through DDP (the Trainer, the optimizers and the checkpoints keep the plain
  module, so saved weights carry no ``module.`` prefix).
* :meth:`DistributedTraining.lockstep` keeps every rank on the same number of steps (below).
* :func:`evaluate_sharded` scores each rank's shard and computes the metrics on the union.

Equal step counts. ``BatchStream`` gives record batch ``k`` to rank ``k % N``, so shards can
differ by a whole record batch (a Parquet row group), not only by one training batch. Stopping
every rank at the shortest shard would drop those rows every epoch (the same rows, as chunk
order is fixed), and ``DDP.join()`` lets a finished rank skip ``optimizer.step()``, so its Adam
moments drift from the others'. Instead, before each step the ranks agree (one all_reduce of a
flag) whether any rank still has a batch; a rank that has run out repeats its last batch with
its loss multiplied by 0. Its gradient is zero, DDP still averages over N (as ``join()`` does),
and every rank applies the same averaged gradient with the same optimizer state, so parameters
and optimizer states stay identical on all ranks, every row is trained on once per epoch, and a
rank-0 checkpoint is every rank's checkpoint. The price: one tiny all_reduce per step, and a
padding step costs a forward and backward on the idle rank.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from recstack.data.batch import Batch
from recstack.data.loader import BatchStream, LoaderConfig
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.errors import ConfigError
from recstack.evaluation.multi_task_metrics import multi_task_report
from recstack.evaluation.ranking_evaluator import collect_heads, collect_predictions
from recstack.evaluation.ranking_metrics import Predictions, ranking_report
from recstack.models.multi_task_base import is_funnel
from recstack.models.retrieval_contract import RetrievalDefaults
from recstack.tasks.base import Task
from recstack.tasks.multi_task import MultiTaskTask

__all__ = [
    "DistributedContext",
    "DistributedTraining",
    "evaluate_sharded",
    "init_from_env",
    "is_distributed",
    "launch",
]


def launch(args: argparse.Namespace) -> int:
    """Runs ``recstack train`` in ``args.nproc`` local processes with ``torch.distributed.run``.

    Equivalent to ``torchrun --standalone --nproc-per-node N -m recstack.cli train CONFIG``;
    multi-node runs call torchrun directly (see docs/distributed.md).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    argv = ["--standalone", f"--nproc-per-node={args.nproc}", "-m", "recstack.cli", "train", str(args.config)]
    for pair in args.set:
        argv += ["--set", pair]
    if args.resume:
        argv.append("--resume")
    if getattr(args, "init_from", None):
        argv += ["--init-from", str(args.init_from)]
    if getattr(args, "overwrite", False):
        argv.append("--overwrite")
    # torchrun would set 1 with a warning; train_run sets config.threads per process anyway
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        run(get_args_parser().parse_args(argv))
    except ChildFailedError as error:
        print(f"error: distributed training failed:\n{error}", file=sys.stderr)
        return 1
    return 0


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # True when init_from_env created the process group (and should close it)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_from_env(device_spec: str = "auto") -> DistributedContext | None:
    """Joins the process group described by torchrun's environment; None for one process.

    Args:
        device_spec: the trainer's ``device`` setting. ``auto`` or ``cuda`` use NCCL and the GPU
            numbered ``LOCAL_RANK``; ``cpu`` (or no GPU) uses gloo.
    """
    if not is_distributed() and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_spec in ("auto", "cuda")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=device,
        owns_group=owns_group,
    )


class _Routed(nn.Module):
    """DDP's module: ``forward(*args, method="forward")`` runs that method of the model.

    DDP prepares its gradient all-reduce in its own ``forward``; a retrieval model's training
    forward is ``retrieval_pairs`` (every position of a sequence), so it must run inside DDP's
    forward too, not on the bare module beside it.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, method: str = "forward", **kwargs: Any) -> Any:
        return getattr(self.model, method)(*args, **kwargs)


class _DDPView:
    """What a task sees as ``model``: calls go through DDP, attributes come from the module.

    Two-tower tasks call ``model(batch)`` or ``model.retrieval_pairs(batch)`` for the loss (the
    forward DDP must see) and may then read ``model.num_item_rows`` or call
    ``model.encode_item_rows``: those parameters were already used in the forward, so their one
    gradient per backward is still reduced by DDP. Attributes read through the view (``kind``,
    the retrieval members) make it a retrieval model exactly when the module is one.
    """

    def __init__(self, ddp: nn.Module, model: nn.Module) -> None:
        self._ddp, self._model = ddp, model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ddp(*args, **kwargs)

    def retrieval_pairs(self, batch: Batch) -> Any:
        """The model's training pairs, computed inside the distributed wrapper's forward."""
        if isinstance(self._ddp, DistributedDataParallel) and isinstance(self._ddp.module, _Routed):
            return self._ddp(batch, method="retrieval_pairs")
        if type(self._model).retrieval_pairs is RetrievalDefaults.retrieval_pairs:  # one pair per row, from forward
            return RetrievalDefaults.retrieval_pairs(self, batch)  # type: ignore[arg-type]  # self(batch): the wrapper's forward
        raise ConfigError(
            f"distributed.embeddings: sharded: {type(self._model).__name__} trains through retrieval_pairs (a pair at "
            "every position), which TorchRec's DistributedModelParallel does not route through its forward; "
            "train it with replicated tables (distributed.embeddings: replicated, DDP)"
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class _DistributedTask:
    """The run's task with its training forward routed through DDP; evaluation is unchanged."""

    def __init__(self, inner: Task, training: "DistributedTraining") -> None:
        self.inner = inner
        self._training = training
        self._view = _DDPView(training.ddp, training.model)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        loss = self.inner.loss(self._view, batch)  # type: ignore[arg-type]
        # a padding step (this rank's shard is spent): zero gradient, still one DDP all-reduce
        return loss * 0.0 if self._training.padding else loss

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.inner.predict(model, batch)  # the plain module: no collective in eval

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"DistributedTask({self.inner!r})"


class DistributedTraining:
    """DDP around a model, a task that trains through it, and lockstep batches.

    Args:
        model: the plain module; moved to ``context.device``. DDP copies rank 0's weights to
            every rank here.
        task: the run's task.
        context: from :func:`init_from_env`.
        wrapped: a module that distributes ``model`` itself (``DistributedModelParallel``, whose
            ``.module`` is ``model``), used instead of DDP (workflows/sharded.py).

    Example (tests/distributed/test_training.py runs it in two processes)::

        training = DistributedTraining(model=model, task=task, context=context)
        trainer.fit(model, training.task, lambda epoch: training.lockstep(stream_for(epoch)))
    """

    def __init__(self, *, model: nn.Module, task: Task, context: DistributedContext, wrapped: nn.Module | None = None) -> None:
        self.context = context
        self.model = model
        if wrapped is not None:  # already distributed (TorchRec's DistributedModelParallel): as is
            self.ddp = wrapped
        else:
            model.to(context.device)
            device_ids = [context.device.index] if context.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(_Routed(model), device_ids=device_ids)
        self.task = _DistributedTask(task, self)
        self.padding = False  # True while the current step is a padding step
        self.padding_rows = 0  # rows of padding steps, to report true sample counts

    def lockstep(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """This rank's batches, padded so that every rank takes the same number of steps.

        Before each step the ranks all_reduce whether any of them still has a batch; when none
        has, the epoch ends on every rank. A rank with none left yields its last batch again and
        :attr:`padding` is True until the next batch (the task zeroes that loss).
        """
        iterator = iter(batches)
        last: Batch | None = None
        while True:
            batch = next(iterator, None)
            flag = torch.tensor([0 if batch is None else 1], device=self.context.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if not flag.item():
                self.padding = False
                return
            if batch is None:
                if last is None:
                    raise RuntimeError(
                        f"rank {self.context.rank} has no training data: the train files hold fewer "
                        f"record batches (Parquet row groups, CSV blocks) than the {self.context.world_size} "
                        "ranks; write smaller row groups or use fewer processes"
                    )
                self.padding = True
                self.padding_rows += len(last)
                yield last
            else:
                self.padding = False
                last = batch
                yield batch


def evaluate_sharded(
    model: nn.Module,
    task: Task,
    preprocessor: Preprocessor,
    source: DataSource,
    *,
    batch_size: int,
) -> dict[str, float]:
    """Exact ranking metrics over every row of ``source``, each rank scoring its own shard.

    The predictions (labels, probabilities, groups) of all ranks are gathered to every rank and
    the metrics are computed once on their union, so every rank returns the same numbers (and
    early-stopping decisions agree). They equal the one-process metrics on the same rows: AUC
    and GAUC do not depend on row order, and the means differ at most in float64 rounding.
    """
    stream = BatchStream(
        source=source,
        preprocessor=preprocessor,
        config=LoaderConfig(batch_size=batch_size),
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
    )
    device = next(model.parameters()).device
    if isinstance(task, MultiTaskTask):  # per-target metrics on every rank's rows, gathered
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, collect_heads(model, task, stream, device=device))
        filled = [part for part in parts if part[1]]
        labels, heads = ({name: np.concatenate([part[i][name] for part in filled]) for name in filled[0][i]} for i in (0, 1))
        groups = np.concatenate([part[2] for part in filled]) if filled[0][2] is not None else None
        return multi_task_report(task.targets, labels, heads, groups, task.params.weighted_metric, funnel=is_funnel(model))
    predictions = collect_predictions(model, task, stream, device=device)
    return ranking_report(*gather_predictions(predictions))


def gather_predictions(predictions: Predictions) -> Predictions:
    """Every rank's predictions, concatenated in rank order, on every rank."""
    parts: list[Predictions | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, predictions)
    filled = [part for part in parts if part is not None and len(part.labels)]
    if not filled:
        return Predictions(np.zeros(0), np.zeros(0), None)
    with_groups = [part.groups is not None for part in filled]
    if any(with_groups) and not all(with_groups):
        raise ValueError("some ranks' predictions carry groups and some do not")
    groups = np.concatenate([part.groups for part in filled]) if all(with_groups) else None
    return Predictions(
        np.concatenate([part.labels for part in filled]),
        np.concatenate([part.probs for part in filled]),
        groups,
    )


def sum_over_ranks(value: float) -> float:
    """``value`` summed over all ranks (float64, on CPU via gloo or on the GPU via NCCL)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total.item())
