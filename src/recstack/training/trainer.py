"""The one training loop: every model, every task.

The task computes the loss, callbacks observe the state and request (log, evaluate, save, stop),
and only this loop acts. Per step::

    loss = task.loss(model, batch)  →  backward  →  clip  →  optimizers  →  schedulers
    → state  →  on_step_end  →  log / save if requested  →  stop if requested

and per epoch: on_epoch_end → evaluate (model.eval(), no_grad) → keep the best weights on
``config.monitor`` → on_evaluate → epoch log → save if requested. At the end the best weights
are loaded back into the model, whether training stopped early or ran all epochs.

The model is whatever module ``fit`` is given, and the loop touches it through four methods a
subclass may override, so a wrapper that manages its own placement, parameters and optimisers
(a TorchRec ``DistributedModelParallel`` with fused, in-backward table optimisers) can stand in
without changing the loop: :meth:`Trainer.place_model` (default ``model.to(device)``),
:meth:`Trainer.build_optimizers` (default: from the config, over ``model.parameters()``; or
pass ``fit(..., optimizers=[...])``), :meth:`Trainer.snapshot_weights` (the best epoch's weights:
default a CPU copy of ``model.state_dict()``) and :meth:`Trainer.restore_weights` (default
``model.load_state_dict``).
"""

from __future__ import annotations

import collections
import copy
import itertools
import operator
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, Sized

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from recstack.data.batch import Batch
from recstack.parallel import rank
from recstack.tasks.base import Task
from recstack.training.allocator import keep_freed_memory
from recstack.training.callbacks import (
    CallbackHandler,
    CheckpointCallback,
    DefaultFlowCallback,
    EarlyStopping,
    ProgressBar,
    TrainerCallback,
)
from recstack.training.checkpoint import (
    CHECKPOINT_NAME,
    checkpoint_payload,
    load_checkpoint,
    restore_run,
    save_checkpoint,
)
from recstack.training.compile import compile_for_training
from recstack.training.config import ConfigError, MixedPrecision, SchedulerName, TrainerConfig
from recstack.training.device import autocast, effective_precision, resolve_device
from recstack.training.gc_freeze import set_up_objects_frozen
from recstack.training.optim import build_optimizers, build_schedulers, clip_grad_norm
from recstack.training.rng import capture_rng, restore_rng, seed_everything
from recstack.training.run import LogWindow, TrainingRun
from recstack.training.state import TrainerControl, TrainerState

__all__ = ["Trainer"]

TrainBatches = Callable[[int], Iterable[Batch]]
Evaluate = Callable[[nn.Module], dict[str, float]]


class Trainer:
    """Train any model with any task.

    Args:
        config: validated settings.
        callbacks: observers; the Trainer adds its defaults (log/evaluate flow, a
            CheckpointCallback when ``checkpoint_dir`` is set, EarlyStopping when
            ``config.patience`` is set, a ProgressBar when ``config.progress``) unless you pass
            one of the same class.
        checkpoint_dir: where ``last.pt`` is written and resumed from (None: no checkpoints).

    Use one Trainer per ``fit``: callbacks (early stopping, history) keep their state.

    Example (see tests/training/test_trainer.py)::

        trainer = Trainer(TrainerConfig(epochs=5, patience=2), checkpoint_dir="runs/x")
        state = trainer.fit(model, BinaryClassificationTask(), train_batches, evaluate)
    """

    def __init__(
        self,
        config: TrainerConfig,
        *,
        callbacks: Sequence[TrainerCallback] = (),
        checkpoint_dir: Path | str | None = None,
    ) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.precision = effective_precision(config.mixed_precision, self.device)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.callbacks = CallbackHandler(self._default_callbacks(callbacks) + list(callbacks))

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME

    def fit(
        self,
        model: nn.Module,
        task: Task,
        train_batches: TrainBatches,
        evaluate: Evaluate | None = None,
        resume: bool = False,
        *,
        optimizers: Sequence[Optimizer] | None = None,
    ) -> TrainerState:
        """Train ``model`` in place and return the final state.

        Args:
            model: placed by :meth:`place_model` (moved to ``trainer.device``); holds the best
                weights on return (the last ones when there is no ``evaluate``).
            task: supplies ``task.loss(model, batch)``.
            train_batches: ``train_batches(epoch)`` gives that epoch's batches. Make the order a
                function of ``epoch`` (or of the global torch RNG, which resume replays); a
                resumed epoch calls it again and discards the batches already trained on.
            evaluate: ``evaluate(model) -> {"auc": ...}``, called at epoch ends under
                ``model.eval()`` and ``torch.no_grad()``; must contain ``config.monitor``.
            resume: continue from ``checkpoint_dir/last.pt``, reaching the same weights as an
                uninterrupted run.
            optimizers: the optimisers to step, as given (each stepped, zeroed and
                scheduled; a fused optimiser that steps inside the backward may be left out);
                None: :meth:`build_optimizers` from the config.
        """
        config = self.config
        if evaluate is None and config.patience is not None:
            warnings.warn("patience is set but fit() has no evaluate: early stopping is off")
        total_steps = self._total_steps(train_batches)  # before seeding: only cosine needs it
        seed_everything(config.seed)
        if config.keep_freed_memory and self.device.type == "cpu":
            keep_freed_memory()
        model = self.place_model(model)
        optimizers = list(optimizers) if optimizers is not None else self.build_optimizers(model)
        if not optimizers:
            raise ValueError("fit needs at least one optimizer")
        run = TrainingRun(
            model=model,
            task=task,
            train_model=compile_for_training(model, self.device) if config.compile else model,
            optimizers=optimizers,
            schedulers=build_schedulers(optimizers, config, total_steps=total_steps),
            scaler=torch.amp.GradScaler(
                self.device.type, enabled=self.precision is MixedPrecision.FP16
            ),
            state=TrainerState(num_epochs=config.epochs),
            control=TrainerControl(),
            epoch_loss=torch.zeros((), dtype=torch.float64, device=self.device),
        )
        if resume:
            self._load(run)
        for optimizer in run.optimizers:
            optimizer.zero_grad(set_to_none=True)

        self.callbacks.fire("on_train_begin", run.state, run.control)
        # the clock starts after the callbacks' set-up (TensorBoard's import and writer: ~0.2-0.3 s,
        # 5-9 % of a short run's step time), as it starts after the model's and optimizer's
        with set_up_objects_frozen(config.freeze_set_up_objects):
            run.clock = time.perf_counter()
            while run.state.epoch < config.epochs and not run.control.should_stop:
                self._train_epoch(run, train_batches, evaluate)
        run.state.stopped_early = run.control.should_stop
        if run.best_weights is not None:
            self.restore_weights(model, run.best_weights)
        self._tick(run)
        self.callbacks.fire("on_train_end", run.state, run.control)
        return run.state

    # -- the loop -------------------------------------------------------------------------

    def _train_epoch(
        self, run: TrainingRun, train_batches: TrainBatches, evaluate: Evaluate | None
    ) -> None:
        state, control = run.state, run.control
        resuming, run.resuming = run.resuming, False
        if resuming:  # replay the epoch's start so train_batches(epoch) gives the same order
            restore_rng(run.epoch_rng)
        else:
            run.epoch_rng = capture_rng()
        batches = train_batches(state.epoch)
        state.epoch_length = _epoch_length(batches, previous=state.epoch_length)
        iterator = iter(batches)
        if resuming:  # skip what the checkpoint already trained on, then continue its RNG
            _discard(iterator, state.epoch_step)
            if run.resume_rng is not None:
                restore_rng(run.resume_rng)
                run.resume_rng = None

        self.callbacks.fire("on_epoch_begin", state, control)
        run.model.train()
        for batch in iterator:
            self._train_step(run, batch.to(self.device, non_blocking=self.device.type == "cuda"))
            self._tick(run)
            self.callbacks.fire("on_step_end", state, control)
            if control.should_log:
                self._log(run, self._step_log(run))
            if control.should_save:
                self._save(run)
            if control.should_stop:
                return
        self._end_epoch(run, evaluate)

    def _train_step(self, run: TrainingRun, batch: Batch) -> None:
        config, state = self.config, run.state
        with autocast(self.precision, self.device):
            loss = run.task.loss(run.train_model, batch)  # ()
        run.scaler.scale(loss).backward()
        if config.grad_clip_norm is not None:
            for optimizer in run.optimizers:
                run.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            clip_grad_norm(run.model.parameters(), config.grad_clip_norm)
        for optimizer in run.optimizers:
            run.scaler.step(optimizer)
        run.scaler.update()
        for optimizer in run.optimizers:
            optimizer.zero_grad(set_to_none=True)
        for scheduler in run.schedulers:
            scheduler.step()

        loss = loss.detach().double()
        run.epoch_loss += loss
        run.window.loss_sum = run.window.loss_sum + loss
        run.window.steps += 1
        run.window.samples += len(batch)
        state.global_step += 1
        state.epoch_step += 1
        state.samples_seen += len(batch)

    def _end_epoch(self, run: TrainingRun, evaluate: Evaluate | None) -> None:
        state, control = run.state, run.control
        self.callbacks.fire("on_epoch_end", state, control)
        record = {
            "epoch": state.epoch,
            "step": state.global_step,
            "train_loss": (run.epoch_loss / max(1, state.epoch_step)).item(),
        }
        if control.should_evaluate and evaluate is not None:
            metrics = self._evaluate(run, evaluate)
            self._track_best(run, metrics)
            self.callbacks.fire("on_evaluate", state, control, metrics)
            record.update({f"eval_{name}": value for name, value in metrics.items()})
        epoch_logs = getattr(run.task, "epoch_logs", None)  # a task's own per-epoch values (learned loss weights)
        if epoch_logs is not None:
            record.update(epoch_logs(run.model))
        control.should_evaluate = False
        self._log(run, record)

        state.epoch += 1
        state.epoch_length = state.epoch_step  # measured: the next epoch's bar has a total
        state.epoch_step = 0
        state.epoch_loss_sum = 0.0
        run.epoch_loss.zero_()
        state.stopped_early = control.should_stop
        if control.should_save:
            self._save(run)

    def _evaluate(self, run: TrainingRun, evaluate: Evaluate) -> dict[str, float]:
        started = time.perf_counter()
        run.model.eval()
        with torch.no_grad():
            metrics = evaluate(run.model)
        run.model.train()
        run.state.evaluation_seconds += time.perf_counter() - started
        return {name: float(value) for name, value in metrics.items()}

    def _track_best(self, run: TrainingRun, metrics: dict[str, float]) -> None:
        config, state = self.config, run.state
        if config.monitor not in metrics:
            raise KeyError(
                f"config.monitor is {config.monitor!r} but evaluate() returned {sorted(metrics)}"
            )
        value = metrics[config.monitor]
        if config.monitor_mode.improved(value, state.best_metric, config.min_delta):
            state.best_metric = value
            state.best_epoch = state.epoch
            run.best_weights = self.snapshot_weights(run.model)

    # -- requests: log and save -------------------------------------------------------------

    def _step_log(self, run: TrainingRun) -> dict[str, float]:
        window = run.window
        loss = float(window.loss_sum) / max(1, window.steps)  # the one sync per log window
        seconds = max(time.perf_counter() - window.started, 1e-9)
        run.window = LogWindow()
        return {
            "epoch": run.state.epoch,
            "step": run.state.global_step,
            "loss": loss,
            "lr": run.optimizers[0].param_groups[0]["lr"],
            "samples_per_second": window.samples / seconds,
        }

    def _log(self, run: TrainingRun, logs: dict[str, float]) -> None:
        run.state.log_history.append(logs)
        self.callbacks.fire("on_log", run.state, run.control, logs)
        run.control.should_log = False

    def _save(self, run: TrainingRun) -> None:
        run.control.should_save = False
        path = self.checkpoint_path
        if path is None:
            warnings.warn("a callback requested a checkpoint but the Trainer has no checkpoint_dir")
            return
        if rank() != 0:  # DDP keeps every rank's state identical: rank 0 writes it
            return
        save_checkpoint(path, checkpoint_payload(run, self.callbacks.state_dict()))
        self.callbacks.fire("on_save", run.state, run.control, path)

    def _load(self, run: TrainingRun) -> None:
        path = self.checkpoint_path
        if path is None:
            raise ValueError("resume=True needs a Trainer with a checkpoint_dir")
        payload = load_checkpoint(path)  # falls back to previous.pt; CheckpointError names both
        restore_run(run, payload)
        self.callbacks.load_state_dict(payload["callbacks"])

    # -- the model's seams: override for a wrapper that manages its own ---------------------

    def place_model(self, model: nn.Module) -> nn.Module:
        """Put ``model`` where it trains and return the module the loop uses (default:
        ``model.to(trainer.device)``, the same object). A sharded wrapper places itself."""
        return model.to(self.device)

    def build_optimizers(self, model: nn.Module) -> list[Optimizer]:
        """The optimisers ``fit`` steps when it is given none: dense, then sparse
        (``training.optim.build_optimizers`` over ``model.parameters()``)."""
        return build_optimizers(model, self.config)

    def snapshot_weights(self, model: nn.Module) -> dict[str, Any]:
        """The best epoch's weights, kept until the end of ``fit``: a CPU copy of
        ``model.state_dict()`` (it costs no accelerator memory). A sharded model, whose state
        dict holds shards, would keep them where they are or gather them here."""
        return _cpu_copy(model.state_dict())

    def restore_weights(self, model: nn.Module, weights: dict[str, Any]) -> None:
        """Load what :meth:`snapshot_weights` returned back into ``model``."""
        model.load_state_dict(weights)

    # -- setup helpers -----------------------------------------------------------------------

    def _default_callbacks(self, given: Sequence[TrainerCallback]) -> list[TrainerCallback]:
        config = self.config

        def missing(kind: type) -> bool:
            return not any(isinstance(callback, kind) for callback in given)

        defaults: list[TrainerCallback] = [
            DefaultFlowCallback(log_every_steps=config.log_every_steps)
        ]
        if self.checkpoint_dir is not None and missing(CheckpointCallback):
            defaults.append(CheckpointCallback(every_steps=config.checkpoint_every_steps))
        if config.patience is not None and missing(EarlyStopping):
            defaults.append(
                EarlyStopping(
                    patience=config.patience,
                    monitor=config.monitor,
                    mode=config.monitor_mode,
                    min_delta=config.min_delta,
                )
            )
        if config.progress and missing(ProgressBar):
            defaults.append(ProgressBar())
        return defaults

    def _total_steps(self, train_batches: TrainBatches) -> int | None:
        if self.config.scheduler is not SchedulerName.COSINE:
            return None
        batches = train_batches(0)
        if not isinstance(batches, Sized):
            raise ConfigError(
                "scheduler: cosine decays over epochs * len(train_batches(epoch)) steps, so "
                "train_batches must return a sized iterable (a list, a DataLoader)"
            )
        return self.config.epochs * len(batches)

    def _tick(self, run: TrainingRun) -> None:
        now = time.perf_counter()
        run.state.train_seconds += now - run.clock
        run.clock = now


def _epoch_length(batches: Iterable[Batch], *, previous: int | None) -> int | None:
    """The number of batches this epoch will give, for the progress bar.

    ``len(batches)`` when it has one; else ``previous`` (the last complete epoch's measured
    count, or this epoch's own value restored by a resume); else an estimate from the iterable's
    ``__length_hint__`` (a :class:`~recstack.data.loader.BatchStream` estimates it from the
    Parquet metadata, or from its cache after a complete pass), looked up through a DataLoader's
    ``dataset``; None when nothing tells (a CSV stream's first epoch).
    """
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:  # unsized, or a DataLoader over an IterableDataset that has no len()
        pass
    if previous is not None:
        return previous
    hint = operator.length_hint(batches, 0) or operator.length_hint(getattr(batches, "dataset", ()), 0)
    return hint or None


def _discard(iterator: Iterator[Batch], count: int) -> None:
    collections.deque(itertools.islice(iterator, count), maxlen=0)


def _cpu_copy(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A deep copy on the CPU: the best-weights snapshot costs no accelerator memory."""
    return {
        name: (
            value.detach().to("cpu", copy=True)
            if isinstance(value, Tensor)
            else copy.deepcopy(value)
        )
        for name, value in state_dict.items()
    }
