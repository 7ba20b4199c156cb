"""The Trainer for a TorchRec-sharded model: the same loop, its seams overridden.

* :meth:`ShardedTrainer.place_model`: the model is already placed (``DistributedModelParallel``).
* :meth:`ShardedTrainer.build_optimizers`: the configured optimiser over the dense parameters,
  then TorchRec's fused optimiser of the tables (it updates them inside the backward; its
  ``step`` only hands the scheduled learning rate to the kernels, so one lr schedule drives both).
* :meth:`ShardedTrainer.snapshot_weights` / :meth:`restore_weights`: copies of this rank's
  shards and of the dense weights, kept where they are (never gathered).
* Checkpoints: every rank writes its shards of the model and of the table optimiser's state with
  ``torch.distributed.checkpoint`` into ``checkpoints/sharded-<step>/`` (the best weights beside
  them), then rank 0 writes ``last.pt`` (dense optimiser, schedulers, RNG, trainer state) naming
  that folder: ``last.pt`` is the commit point, as for a replicated run. Resuming needs the
  same number of ranks (the batches each rank trains on depend on it): another world size is a
  CheckpointError naming both.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

from recstack.training.checkpoint import CheckpointError, checkpoint_payload, load_checkpoint, restore_run, save_checkpoint
from recstack.training.config import TrainerConfig
from recstack.training.optim import _dense_optimizer
from recstack.training.run import TrainingRun
from recstack.training.sharded import ShardedModel
from recstack.training.callbacks import TrainerCallback
from recstack.training.trainer import Trainer

__all__ = ["ShardedTrainer"]

SHARDED_PREFIX = "sharded-"


class ShardedTrainer(Trainer):
    """A :class:`~recstack.training.trainer.Trainer` for ``sharded.dmp``.

    Example (tests/distributed/test_torchrec_training.py)::

        trainer = ShardedTrainer(config, sharded=sharded, checkpoint_dir=run / "checkpoints")
        trainer.fit(sharded.dmp, task, train_batches, evaluate)
    """

    def __init__(
        self,
        config: TrainerConfig,
        *,
        sharded: ShardedModel,
        callbacks: Sequence[TrainerCallback] = (),
        checkpoint_dir: Path | str | None = None,
    ) -> None:
        super().__init__(config, callbacks=callbacks, checkpoint_dir=checkpoint_dir)
        self.sharded = sharded

    # -- the seams ------------------------------------------------------------------------------
    def place_model(self, model: nn.Module) -> nn.Module:
        return model  # DistributedModelParallel placed the shards and the dense part

    def build_optimizers(self, model: nn.Module) -> list[Optimizer]:
        dense = self.sharded.dense_parameters()
        return ([_dense_optimizer(dense, self.config)] if dense else []) + [self.sharded.fused_optimizer]

    def snapshot_weights(self, model: nn.Module) -> dict[str, Any]:
        return {name: _local_copy(value) for name, value in model.state_dict().items()}

    def restore_weights(self, model: nn.Module, weights: dict[str, Any]) -> None:
        with torch.no_grad():
            for name, value in model.state_dict().items():
                for target, source in zip(_local_tensors(value), _local_tensors(weights[name])):
                    target.copy_(source)

    # -- checkpoints: DCP shards + rank 0's last.pt ---------------------------------------------
    def _save(self, run: TrainingRun) -> None:
        import torch.distributed.checkpoint as dcp

        run.control.should_save = False
        path = self.checkpoint_path
        if path is None:
            return super()._save(run)  # warns
        folder = path.parent / f"{SHARDED_PREFIX}{run.state.global_step}-{run.state.epoch}"
        dcp.save(self._sharded_state(run, run.model), checkpoint_id=str(folder))
        dist.barrier()  # every rank's shards are written before last.pt names them
        if dist.get_rank() == 0:
            payload = checkpoint_payload(run, self.callbacks.state_dict())
            payload["model"] = {}  # in the DCP folder, with the table optimiser's state
            payload["best_weights"] = None
            payload["optimizers"] = [o.state_dict() for o in run.optimizers[:-1]]
            payload["sharded"] = {"folder": folder.name, "world_size": dist.get_world_size(), "has_best": run.best_weights is not None}
            previous = _previous_folder(path)
            save_checkpoint(path, payload)
            _remove_older(path.parent, keep={folder.name, previous})
            self.callbacks.fire("on_save", run.state, run.control, path)
        dist.barrier()

    def _load(self, run: TrainingRun) -> None:
        import torch.distributed.checkpoint as dcp

        path = self.checkpoint_path
        if path is None:
            raise ValueError("resume=True needs a Trainer with a checkpoint_dir")
        payload = load_checkpoint(path)
        sharded = payload.get("sharded")
        if sharded is None:
            raise CheckpointError(f"{path}: a replicated run's checkpoint; resume it with distributed.embeddings: replicated")
        if sharded["world_size"] != dist.get_world_size():
            raise CheckpointError(
                f"{path}: written by {sharded['world_size']} ranks, resumed with {dist.get_world_size()}; "
                f"resume with --nproc {sharded['world_size']} (each rank's batches depend on the number of ranks)"
            )
        if sharded["has_best"]:
            run.best_weights = self.snapshot_weights(run.model)  # the shapes DCP loads into
        state = self._sharded_state(run, run.model)
        dcp.load(state, checkpoint_id=str(path.parent / sharded["folder"]))
        best = state.get("best")
        payload["model"] = state["model"]  # restore_run loads it (once: DMP's load consumes the dict)
        payload["optimizers"] = [*payload["optimizers"], state["tables_optimizer"]]
        restore_run(run, payload)
        run.best_weights = best
        self.callbacks.load_state_dict(payload["callbacks"])

    def _sharded_state(self, run: TrainingRun, model: nn.Module) -> dict[str, Any]:
        state: dict[str, Any] = {"model": model.state_dict(), "tables_optimizer": self.sharded.fused_optimizer.state_dict()}
        if run.best_weights is not None:
            state["best"] = run.best_weights
        return state


def _local_copy(value: Any) -> Any:
    """A copy holding this rank's data: a ShardedTensor's local shards copied in a twin
    ShardedTensor (so DCP can save it), a plain tensor cloned."""
    if hasattr(value, "local_shards"):
        from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor

        shards = [Shard(tensor=s.tensor.detach().clone(), metadata=s.metadata) for s in value.local_shards()]
        return ShardedTensor._init_from_local_shards_and_global_metadata(shards, value.metadata())
    return value.detach().clone() if isinstance(value, Tensor) else value


def _local_tensors(value: Any) -> list[Tensor]:
    if hasattr(value, "local_shards"):
        return [s.tensor for s in value.local_shards()]
    return [value] if isinstance(value, Tensor) else []


def _previous_folder(path: Path) -> str | None:
    """The DCP folder the current ``last.pt`` names (it becomes ``previous.pt``'s)."""
    if not path.exists():
        return None
    try:
        return load_checkpoint(path).get("sharded", {}).get("folder")
    except CheckpointError:
        return None


def _remove_older(folder: Path, *, keep: set[str | None]) -> None:
    for child in folder.glob(f"{SHARDED_PREFIX}*"):
        if child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)
