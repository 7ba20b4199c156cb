"""``recstack tune``: Optuna search over the run config's ``tune:`` space, each trial an ordinary run.

The tune folder (default ``runs/<name>_tune/``) holds the study (``study.db``, SQLite), the run
folder of the best trial (``trials/trial_NNNN/``), ``best_config.yaml`` (runnable with
``recstack train``), ``trials.csv`` and the plots. A killed tune rerun with the same command
continues the study: completed trials are kept, the trial it was running is retried.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from recstack.atomic import atomic_path, write_json_atomic
from recstack.config import RunConfig
from recstack.errors import ConfigError, RecstackError
from recstack.export.staged_run import RunLock
from recstack.models.registry import check_model_config
from recstack.training import TrainerConfig
from recstack.tuning.pruning import PruningReporter
from recstack.tuning.space import PrunerName, TuneSpec, parse_tune_section, suggest

__all__ = ["TuneJob", "load_tune_spec", "tune_run"]


@dataclass(frozen=True)
class TuneJob:
    """Everything a trial process needs (picklable: worker processes get a copy)."""

    config_path: str
    overrides: Mapping[str, Any]
    spec: TuneSpec
    pruner: PrunerName
    storage: str
    study_name: str
    trials_dir: str
    seed: int
    one_thread: bool  # --jobs > 1: each trial process trains with one torch thread
    keep_all: bool


class _MetricMissing(Exception):
    """The metric to optimise is not among the run's validation metrics: stop the whole tune."""


def load_tune_spec(config_path: str | Path, overrides: Mapping[str, Any]) -> tuple[RunConfig, TuneSpec]:
    """The run config and its parsed ``tune:`` section; every search-space entry is checked by
    applying each of its bounds / choices to the config (a dry parse), before any trial runs."""
    config = RunConfig.from_yaml(config_path, overrides=overrides)
    trainer = _trainer_config(config, "trainer")
    spec = parse_tune_section(config.raw.get("tune"), monitor=trainer.monitor, monitor_mode=trainer.monitor_mode.value)
    if config.data.valid is None:
        raise ConfigError("data.valid: recstack tune scores every trial on the validation data; the config has none")
    for param in spec.params:
        for value in param.bounds():
            try:
                trial_config = RunConfig.from_yaml(config_path, overrides={**overrides, param.key: value})
                _trainer_config(trial_config, param.key)
                check_model_config(trial_config.model.name, trial_config.model.params)
            except ConfigError as error:
                raise ConfigError(f"tune.params.{param.key}: {value!r} does not apply to the config: {error}") from None
    return config, spec


def tune_run(
    config_path: str | Path,
    *,
    trials: int,
    overrides: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    pruner: str | None = None,
    jobs: int = 1,
    keep_trials: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the study until it holds ``trials`` finished trials; write the tune folder; return its summary.

    Raises:
        ConfigError: a bad ``tune:`` section or search-space entry (before any trial), or a
            ``tune.metric`` the run's validation does not report (after the first trial).
        RunFolderError: another process is tuning the same folder.
    """
    if trials < 1 or jobs < 1:
        raise ConfigError(f"--trials and --jobs must be >= 1, got {trials} and {jobs}")
    overrides = dict(overrides or {})
    config, spec = load_tune_spec(config_path, overrides)
    chosen_pruner = PrunerName(pruner) if pruner else spec.pruner
    folder = Path(out) if out else config.output.with_name(f"{config.output.name}_tune")
    folder.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    study_name = study_name or config.name

    import optuna

    from recstack.tuning import study as studies

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    with RunLock(folder / ".tune.lock", folder):
        study = optuna.create_study(storage=studies.open_storage(storage), study_name=study_name, direction=spec.direction.value, load_if_exists=True)
        interrupted = studies.fail_interrupted_trials(study)
        if interrupted:
            log(f"{len(interrupted)} trial(s) of an interrupted tune marked failed and queued again: {[t.number for t in interrupted]}")
        done = studies.finished_count(study)
        remaining = max(0, trials - done)
        if done:
            log(f"study {study_name!r} ({storage}) has {done} finished trial(s); running {remaining} more")
        job = TuneJob(
            config_path=str(config_path), overrides=overrides, spec=spec, pruner=chosen_pruner, storage=storage,
            study_name=study_name, trials_dir=str(folder / "trials"), seed=config.seed + len(study.trials),
            one_thread=jobs > 1, keep_all=keep_trials,
        )
        shares = [remaining // jobs + (1 if i < remaining % jobs else 0) for i in range(jobs)]
        shares = [share for share in shares if share]
        if len(shares) <= 1:
            _optimize(job, shares[0] if shares else 0, worker=0, log=log)
        else:
            _run_workers(job, shares)
        study = optuna.load_study(storage=studies.open_storage(storage), study_name=study_name)
        studies.clean_trial_folders(study, Path(job.trials_dir), keep_all=keep_trials)
        return _write_outputs(study, spec, config, Path(config_path), overrides, folder, storage, started)


# ---------------------------------------------------------------------------------------------
# trials


def _optimize(job: TuneJob, n_trials: int, *, worker: int, log: Callable[[str], None] = print) -> None:
    """Run ``n_trials`` trials of the study, one after another, in this process."""
    import optuna

    from recstack.tuning import study as studies

    if n_trials <= 0:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        storage=studies.open_storage(job.storage), study_name=job.study_name,
        sampler=studies.make_sampler(job.spec, seed=job.seed + 1000 * worker), pruner=studies.make_pruner(job.pruner, job.spec),
    )
    trials_dir = Path(job.trials_dir)

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "" if trial.value is None else f" {job.spec.metric} {trial.value:.4f}"
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        log(f"trial {trial.number} {trial.state.name.lower()}{value} ({params}) {seconds:.1f} s")
        studies.clean_trial_folders(study, trials_dir, keep_all=job.keep_all)

    try:
        study.optimize(
            lambda trial: _objective(job, trial), n_trials=n_trials,
            catch=(RecstackError, RuntimeError, ValueError, ArithmeticError), callbacks=[after_trial],
        )
    except _MetricMissing as error:
        raise ConfigError(str(error)) from None


def _objective(job: TuneJob, trial: Any) -> float:
    import optuna

    from recstack.workflows.train import train_run

    values = {param.key: suggest(param, trial) for param in job.spec.params}
    folder = Path(job.trials_dir) / f"trial_{trial.number:04d}"
    settings: dict[str, Any] = {**job.overrides, **values, "output": str(folder.resolve()), "trainer.progress": False}
    if job.one_thread:
        settings["threads"] = 1
    trial.set_user_attr("run", str(folder))
    reporter = PruningReporter(trial=trial, metric=job.spec.metric)
    try:
        config = RunConfig.from_yaml(job.config_path, overrides=settings)
        metrics = train_run(config, overwrite=True, callbacks=[reporter], log=lambda _: None)
    except KeyboardInterrupt:  # Ctrl-C: Optuna records FAIL; a rerun retries it without counting it
        trial.set_user_attr("interrupted", True)
        trial.study.enqueue_trial(trial.params)
        raise
    except Exception as error:
        trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
        raise
    if reporter.missing is not None:
        raise _MetricMissing(f"tune.metric: {job.spec.metric!r} is not a validation metric of this run; it reports {reporter.missing}")
    if reporter.pruned_at is not None:
        trial.set_user_attr("pruned_at_epoch", reporter.pruned_at)
        raise optuna.TrialPruned(f"pruned at epoch {reporter.pruned_at}")
    return float(metrics["valid"][job.spec.metric])


def _run_workers(job: TuneJob, shares: list[int]) -> None:
    """``--jobs N``: N processes (not threads: training is CPU-bound), each running its share of
    the trials against the shared storage with one torch thread."""
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    workers = [context.Process(target=_worker, args=(job, share, index), name=f"tune-worker-{index}") for index, share in enumerate(shares)]
    for process in workers:
        process.start()
    try:
        for process in workers:
            process.join()
    except BaseException:
        for process in workers:
            process.terminate()
        raise
    failed = [process.name for process in workers if process.exitcode != 0]
    if failed:
        raise RecstackError(f"tune worker(s) {failed} failed (see their messages above); rerun the same command to continue the study")


def _worker(job: TuneJob, n_trials: int, index: int) -> None:
    import torch

    torch.set_num_threads(1)
    _optimize(job, n_trials, worker=index + 1)


# ---------------------------------------------------------------------------------------------
# outputs


def _write_outputs(study: Any, spec: TuneSpec, config: RunConfig, config_path: Path, overrides: Mapping[str, Any], folder: Path, storage: str, started: float) -> dict[str, Any]:
    from recstack.tuning import study as studies

    studies.write_trials_table(study, folder / "trials.csv")
    plots = studies.write_plots(study, folder)
    states = [trial.state.name for trial in study.trials]
    summary: dict[str, Any] = {
        "study": study.study_name, "storage": storage, "tune_folder": str(folder),
        "metric": spec.metric, "direction": spec.direction.value,
        "trials": len(states), **{state.lower(): states.count(state) for state in ("COMPLETE", "PRUNED", "FAIL")},
        "plots": plots, "wall_seconds": round(time.perf_counter() - started, 3),
    }
    best = studies.best_trial(study)
    if best is None:
        errors = [t.user_attrs["error"] for t in study.trials if "error" in t.user_attrs]
        raise RecstackError(f"no trial of study {study.study_name!r} completed{'; first error: ' + errors[0] if errors else ''} (trials table: {folder / 'trials.csv'})")
    values = {param.key: suggest(param, _Replay(best.params)) for param in spec.params}
    best_config = folder / "best_config.yaml"
    with atomic_path(best_config) as tmp:
        tmp.write_text(_best_config_text(config_path, overrides, values, best, spec), encoding="utf-8")
    summary["best"] = {"number": best.number, "value": best.value, "params": values, "run": best.user_attrs.get("run")}
    summary["best_config"] = str(best_config)
    write_json_atomic(folder / "tune.json", summary)
    return summary


class _Replay:
    """A finished trial's stored params, answering ``suggest`` (categorical JSON text → lists)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = params

    def suggest_float(self, name: str, *_: Any, **__: Any) -> Any:
        return self.params[name]

    suggest_int = suggest_categorical = suggest_float


def _best_config_text(config_path: Path, overrides: Mapping[str, Any], values: Mapping[str, Any], best: Any, spec: TuneSpec) -> str:
    """The config with --set overrides and the best values applied, ``tune:`` removed, and its
    paths made absolute so it runs from the tune folder."""
    config = RunConfig.from_yaml(config_path, overrides={**overrides, **values})
    raw = dict(config.raw)
    raw.pop("tune", None)
    data: dict[str, Any] = {"dataset": config.data.dataset, "dir": str(Path(config.data.dataset_dir or ".").resolve())} if config.data.dataset else {}
    for key in ("train", "valid", "test", "catalog", "seen"):
        source = getattr(config.data, key)
        if source is not None:
            entry: dict[str, Any] = {"paths": [str(Path(p).resolve()) for p in source.paths], "format": source.format.value}
            if source.column_names:
                entry.update(column_names=list(source.column_names), header=source.header)
            if source.delimiter:
                entry["delimiter"] = source.delimiter
            if source.skip_bad_rows:
                entry["skip_bad_rows"] = True
            data[key] = entry
    raw["data"] = data
    if isinstance(raw.get("schema"), str):
        raw["schema"] = str(_schema_path(config_path, raw["schema"]))
    raw["output"] = str(config.output.resolve())
    header = (
        f"# best trial of the tune: trial {best.number}: valid {spec.metric} {best.value:.6g} ({spec.direction.value})\n"
        f"# written by recstack tune from {config_path}; train it with: recstack train THIS_FILE\n"
    )
    return header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)


def _schema_path(config_path: Path, text: str) -> Path:
    path = Path(text)
    if path.is_absolute():
        return path
    base = config_path.parent
    project = base.parent if base.name == "configs" else base  # as RunConfig resolves it
    return next((p for p in (base / path, project / path) if p.exists()), project / path).resolve()


def _trainer_config(config: RunConfig, key: str) -> TrainerConfig:
    try:
        return TrainerConfig.from_dict({"seed": config.seed, **config.trainer})
    except ConfigError as error:
        raise ConfigError(f"trainer.{error}" if key == "trainer" else str(error)) from None
