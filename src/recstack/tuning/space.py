"""The ``tune:`` section of a run config: the search space, the objective and the pruner.

Parsed once, at the edge, into frozen dataclasses; every problem is a
:class:`~recstack.errors.ConfigError` naming the key (``tune.params.trainer.lr: low 0.1 > high
0.01``). Optuna is not imported here: :func:`suggest` only calls the ``trial.suggest_*`` methods.

Example:
    >>> spec = parse_tune_section(
    ...     {"params": {"trainer.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    ...                 "model.params.hidden_dims": [[64], [128, 64]]}},
    ...     monitor="auc", monitor_mode="max")
    >>> spec.metric, spec.direction.value, [p.key for p in spec.params]
    ('auc', 'maximize', ['trainer.lr', 'model.params.hidden_dims'])
    >>> parse_tune_section({"params": {"trainer.lr": {"type": "float", "low": 1, "high": 0.1}}},
    ...                    monitor="auc", monitor_mode="max")
    Traceback (most recent call last):
    ...
    recstack.errors.ConfigError: tune.params.trainer.lr: low 1 > high 0.1
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from recstack.errors import ConfigError

__all__ = [
    "CategoricalParam",
    "Direction",
    "FloatParam",
    "IntParam",
    "PrunerName",
    "SearchParam",
    "TuneSpec",
    "parse_tune_section",
    "suggest",
]


class Direction(str, enum.Enum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


class PrunerName(str, enum.Enum):
    MEDIAN = "median"  # stop a trial whose epoch metric is worse than the median of earlier trials' at that epoch
    HYPERBAND = "hyperband"
    NONE = "none"


@dataclass(frozen=True)
class FloatParam:
    key: str  # a dotted config key, as --set takes it: trainer.lr
    low: float
    high: float
    log: bool = False
    step: float | None = None  # a grid low, low+step, ... (not with log)

    def bounds(self) -> tuple[Any, ...]:
        return (self.low, self.high)


@dataclass(frozen=True)
class IntParam:
    key: str
    low: int
    high: int
    step: int = 1
    log: bool = False

    def bounds(self) -> tuple[Any, ...]:
        return (self.low, self.high)


@dataclass(frozen=True)
class CategoricalParam:
    key: str
    choices: tuple[Any, ...]  # any YAML values; lists and mappings are stored in the study as JSON text

    def bounds(self) -> tuple[Any, ...]:
        return self.choices


SearchParam = FloatParam | IntParam | CategoricalParam


@dataclass(frozen=True)
class TuneSpec:
    """What ``recstack tune`` searches and optimises."""

    params: tuple[SearchParam, ...]
    metric: str  # a validation metric of the run (default: trainer.monitor)
    direction: Direction  # default: trainer.monitor_mode (max -> maximize)
    pruner: PrunerName = PrunerName.MEDIAN
    startup_trials: int = 5  # finished trials before the pruner prunes and TPE stops sampling at random
    warmup_epochs: int = 0  # epochs of every trial that are never pruned


class Trial(Protocol):  # the part of optuna.Trial that suggest() calls
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


def suggest(param: SearchParam, trial: Trial) -> Any:
    """The value ``trial`` picks for ``param`` (a config value: lists come back as lists)."""
    if isinstance(param, FloatParam):
        return trial.suggest_float(param.key, param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, IntParam):
        return trial.suggest_int(param.key, param.low, param.high, step=param.step, log=param.log)
    stored = [stored_choice(choice) for choice in param.choices]
    picked = trial.suggest_categorical(param.key, stored)
    return param.choices[stored.index(picked)]


def stored_choice(choice: Any) -> Any:
    """Optuna stores None, bool, int, float and str choices; anything else as its JSON text."""
    if choice is None or isinstance(choice, (bool, int, float, str)):
        return choice
    return json.dumps(choice)


_SECTION_KEYS = {"params", "metric", "direction", "pruner", "startup_trials", "warmup_epochs"}
_TYPES = ("float", "loguniform", "uniform", "int", "categorical")
_NOT_TUNABLE = ("tune", "name", "output")  # the tune writes each trial's run folder itself


def parse_tune_section(section: Any, *, monitor: str, monitor_mode: str) -> TuneSpec:
    """Parse ``tune:``; ``monitor`` / ``monitor_mode`` are the run's ``trainer.monitor`` / ``monitor_mode``."""
    if section is None:
        raise ConfigError("tune: the config has no tune: section (the search space); see docs/config.md, Tuning")
    if not isinstance(section, Mapping):
        raise ConfigError(f"tune: expected a mapping with params (and metric, direction, pruner), got {section!r}")
    unknown = set(section) - _SECTION_KEYS
    if unknown:
        raise ConfigError(f"tune: unknown key(s) {sorted(unknown)}; allowed: {sorted(_SECTION_KEYS)}")
    params = section.get("params")
    if not isinstance(params, Mapping) or not params:
        raise ConfigError("tune.params: expected a mapping of dotted config keys to search ranges, e.g. trainer.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}")
    metric = section.get("metric", monitor)
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"tune.metric: expected a metric name, got {metric!r}")
    default = Direction.MAXIMIZE if str(getattr(monitor_mode, "value", monitor_mode)) == "max" else Direction.MINIMIZE
    if metric != monitor and "direction" not in section:  # monitor_mode describes trainer.monitor only
        raise ConfigError(f"tune.direction: required when tune.metric ({metric!r}) is not trainer.monitor ({monitor!r}): maximize or minimize")
    direction = _choice(section.get("direction", default.value), Direction, "tune.direction")
    pruner = _choice(section.get("pruner", PrunerName.MEDIAN.value), PrunerName, "tune.pruner")
    startup = _count(section.get("startup_trials", 5), "tune.startup_trials", minimum=0)
    warmup = _count(section.get("warmup_epochs", 0), "tune.warmup_epochs", minimum=0)
    parsed = tuple(_param(str(key), spec) for key, spec in params.items())
    return TuneSpec(params=parsed, metric=metric, direction=direction, pruner=pruner, startup_trials=startup, warmup_epochs=warmup)


def _param(key: str, spec: Any) -> SearchParam:
    name = f"tune.params.{key}"
    if not key or key.split(".")[0] in _NOT_TUNABLE or any(not part for part in key.split(".")):
        raise ConfigError(f"{name}: not a tunable config key (name, output and tune are set by the tune itself)")
    if isinstance(spec, (list, tuple)):  # shorthand: a list of choices
        spec = {"type": "categorical", "choices": list(spec)}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{name}: expected a mapping such as {{type: float, low: 0.0001, high: 0.1, log: true}} or a list of choices, got {spec!r}")
    kind = spec.get("type")
    if kind not in _TYPES:
        raise ConfigError(f"{name}.type: unknown distribution {kind!r}; expected one of {list(_TYPES)}")
    if kind == "categorical":
        _only(spec, {"type", "choices"}, name)
        choices = spec.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ConfigError(f"{name}.choices: expected a non-empty list, got {choices!r}")
        stored = [stored_choice(choice) for choice in choices]
        if len(set(map(repr, stored))) != len(stored):
            raise ConfigError(f"{name}.choices: repeated choice in {list(choices)!r}")
        return CategoricalParam(key=key, choices=tuple(choices))
    _only(spec, {"type", "low", "high", "log", "step"}, name)
    integer = kind == "int"
    low, high = (_number(spec.get(bound), f"{name}.{bound}", integer=integer) for bound in ("low", "high"))
    log = spec.get("log", kind == "loguniform")
    if not isinstance(log, bool):
        raise ConfigError(f"{name}.log: expected true or false, got {log!r}")
    if kind in ("loguniform", "uniform") and log != (kind == "loguniform"):
        raise ConfigError(f"{name}.log: {kind} is {'always' if kind == 'loguniform' else 'never'} log; use type: float with log: {str(log).lower()}")
    if low > high:
        raise ConfigError(f"{name}: low {low} > high {high}")
    if log and low <= 0:
        raise ConfigError(f"{name}: a log scale needs low > 0, got low {low}")
    step = spec.get("step")
    if step is not None:
        step = _number(step, f"{name}.step", integer=integer)
        if step <= 0:
            raise ConfigError(f"{name}.step: must be > 0, got {step}")
        if log and not (integer and step == 1):
            raise ConfigError(f"{name}.step: a log scale takes no step")
    if integer:
        return IntParam(key=key, low=int(low), high=int(high), step=int(step or 1), log=log)
    return FloatParam(key=key, low=float(low), high=float(high), log=log, step=None if step is None else float(step))


def _only(spec: Mapping[str, Any], allowed: set[str], name: str) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {sorted(unknown)} for type {spec.get('type')}; allowed: {sorted(allowed)}")


def _number(value: Any, name: str, *, integer: bool) -> float:
    if isinstance(value, str) and not integer:  # PyYAML reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(f"{name}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    return value


def _count(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _choice(value: Any, enum_type: type[enum.Enum], name: str) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        raise ConfigError(f"{name}: expected one of {[m.value for m in enum_type]}, got {value!r}") from None
