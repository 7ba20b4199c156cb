"""The Optuna side of ``recstack tune``: storage, sampler and pruner, interrupted trials, and the
outputs (trials table, plots). The only module of recstack that imports optuna."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from recstack.atomic import atomic_path
from recstack.tuning.space import PrunerName, TuneSpec

__all__ = ["FINISHED", "clean_trial_folders", "fail_interrupted_trials", "finished_count", "make_pruner", "make_sampler", "open_storage", "write_plots", "write_trials_table"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
INTERRUPTED = "interrupted"  # user attr of a trial whose process died: not counted, its params retried


def open_storage(url: str) -> Any:
    """Any Optuna storage URL; SQLite waits for a lock (several worker processes) instead of failing."""
    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.get_storage(url)


def make_sampler(spec: TuneSpec, *, seed: int) -> optuna.samplers.BaseSampler:
    # TPE after startup_trials random ones; ``seed`` differs per resume and worker, so a resumed
    # tune does not draw the same random points as the trials it already has
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, spec.startup_trials))


def make_pruner(name: PrunerName, spec: TuneSpec) -> optuna.pruners.BasePruner:
    if name is PrunerName.MEDIAN:
        return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_epochs)
    if name is PrunerName.HYPERBAND:
        return optuna.pruners.HyperbandPruner(min_resource=max(1, spec.warmup_epochs))
    return optuna.pruners.NopPruner()


def fail_interrupted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials left RUNNING by a killed tune (the caller holds the tune's lock, so no live process
    runs them) become FAIL, marked ``interrupted``; their parameters are queued to run again."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    storage = study._storage  # the public Study has no way to finish another process's trial
    for trial in stale:
        storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params)
    return stale


def finished_count(study: optuna.Study) -> int:
    """Trials that count towards ``--trials``: complete, pruned or failed, not interrupted."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED) if not t.user_attrs.get(INTERRUPTED))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's best complete trial, by the same rule the folder cleaning keeps (:func:`_best_of`)."""
    return _best_of(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), study.direction)


def clean_trial_folders(study: optuna.Study, trials_dir: Path, *, keep_all: bool) -> None:
    """Delete the run folders of finished trials other than the best (and what killed trials left).

    The best is chosen from the same snapshot of trials that is cleaned: with ``--jobs``, another
    worker may finish a better trial meanwhile, and a best read before that trial and a list read
    after it would delete the new best's folder. A trial finishing after the snapshot is left
    alone (the next clean sees it)."""
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    best = _best_of(finished, study.direction)
    for trial in finished:
        if keep_all and trial.state is TrialState.COMPLETE or best is not None and trial.number == best.number:
            continue
        name = f"trial_{trial.number:04d}"
        for leftover in (trials_dir / name, trials_dir / f".{name}.partial", trials_dir / f".{name}.lock"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            elif leftover.exists():
                leftover.unlink(missing_ok=True)


def _best_of(trials: list[FrozenTrial], direction: optuna.study.StudyDirection) -> FrozenTrial | None:
    """The complete trial with the best value (the lowest number among ties, as Optuna's), or None."""
    complete = [t for t in trials if t.state is TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    sign = -1.0 if direction is optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(complete, key=lambda t: (sign * t.value, t.number))


def write_trials_table(study: optuna.Study, path: Path) -> None:
    """trials.csv: number, state, value, duration_s, one params_<key> column per parameter, notes."""
    trials = study.get_trials(deepcopy=False)
    keys = sorted({key for trial in trials for key in trial.params})
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", "value", "duration_s", *[f"params_{k}" for k in keys], "pruned_at_epoch", "note"])
        for trial in trials:
            duration = trial.duration.total_seconds() if trial.duration is not None else ""
            note = "interrupted (retried)" if trial.user_attrs.get(INTERRUPTED) else trial.user_attrs.get("error", "")
            writer.writerow([
                trial.number, trial.state.name, "" if trial.value is None else trial.value,
                "" if duration == "" else round(duration, 3),
                *[trial.params.get(k, "") for k in keys], trial.user_attrs.get("pruned_at_epoch", ""), note,
            ])


def write_plots(study: optuna.Study, folder: Path) -> dict[str, str]:
    """Optuna's standard plots as PNG (Agg); returns {file name: "written" or why it was skipped}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    wanted = {
        "optimization_history.png": (plots.plot_optimization_history, 1),
        "param_importances.png": (plots.plot_param_importances, 2),
        "intermediate_values.png": (plots.plot_intermediate_values, 1),
    }
    written: dict[str, str] = {}
    for name, (plot, needed) in wanted.items():
        if completed < needed:
            written[name] = f"skipped: needs >= {needed} completed trials, the study has {completed}"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning of the matplotlib backend
                axes = plot(study)
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            with atomic_path(folder / name) as tmp:
                figure.savefig(tmp, format="png", dpi=100)
            plt.close(figure)
            written[name] = "written"
        except (ValueError, RuntimeError, ZeroDivisionError) as error:  # e.g. importances of a one-value parameter
            written[name] = f"skipped: {error}"
    return written
