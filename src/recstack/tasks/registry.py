"""Task names to classes, filled where each class is defined: ``@register_task("binary")``.

A registered task has a nested ``Params`` (a frozen :class:`TaskParams` dataclass), a
``family`` (:class:`TaskType`: how a run with it is evaluated) and the classmethod
``from_params(params) -> task``; the task keeps its ``params``. A run's task is a
:class:`TaskSpec` (name + params): parsed once from the config's ``task:`` section, saved in
the run folder's ``model.json`` and rebuilt everywhere by :func:`build_task`::

    spec = parse_task_section({"type": "binary", "pos_weight": 2.0})
    task = build_task(spec)                            # BinaryClassificationTask(pos_weight=2.0)
    build_task(TaskSpec.from_dict(spec.to_dict()))     # the same task, from model.json
    parse_task_section({"type": "binary", "pos_wieght": 2})
    # ConfigError: task.pos_wieght: unknown parameter (did you mean 'pos_weight'?)
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from recstack.errors import ConfigError
from recstack.models.params import CheckedParams, ParamError

__all__ = [
    "RegisteredTask",
    "TaskParams",
    "TaskSpec",
    "TaskType",
    "build_task",
    "parse_task_section",
    "register_task",
    "task_class",
    "task_names",
]


class TaskType(str, Enum):
    """The family of a task: how its runs are read and evaluated."""

    BINARY = "binary"  # ranking: rows scored, AUC / GAUC / logloss over the task's predict
    RETRIEVAL = "retrieval"  # two-tower / YouTubeDNN: full-corpus Recall / NDCG (see tasks.retrieval)


@dataclass(frozen=True, kw_only=True)
class TaskParams(CheckedParams):
    """Parameters of a task, checked once (types by annotation, ranges in ``validate``)."""


class RegisteredTask:
    """Mixin of registered tasks: equal when their class and parameters are; ``spec`` rebuilds them.

    A subclass sets ``self.params`` (its ``Params``) in its constructor.
    """

    name: str  # set by @register_task
    params: TaskParams

    @property
    def spec(self) -> "TaskSpec":
        """What to save so :func:`build_task` rebuilds this task."""
        return TaskSpec(self.name, self.params)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params == self.params  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


C = TypeVar("C", bound=type)

_TASKS: dict[str, type] = {}


def register_task(name: str) -> Callable[[C], C]:
    """Class decorator: make the task buildable by ``name`` from a config or a saved spec."""

    def decorate(cls: C) -> C:
        params = getattr(cls, "Params", None)
        if not (isinstance(params, type) and issubclass(params, TaskParams)):
            raise TypeError(f"task {name!r}: {cls.__name__}.Params must subclass TaskParams")
        if not isinstance(getattr(cls, "family", None), TaskType):
            raise TypeError(f"task {name!r}: {cls.__name__}.family must be a TaskType")
        if not callable(getattr(cls, "from_params", None)):
            raise TypeError(f"task {name!r}: {cls.__name__} needs a from_params(params) classmethod")
        if name in _TASKS and _TASKS[name].__qualname__ != cls.__qualname__:
            raise ValueError(f"task name {name!r} is already taken by {_TASKS[name].__qualname__}")
        _TASKS[name] = cls
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def task_names() -> list[str]:
    """Every registered task name, sorted."""
    _register_builtin()
    return sorted(_TASKS)


def task_class(name: str, *, key: str = "task.name") -> type:
    """The class registered as ``name``; ConfigError naming ``key`` when there is none."""
    _register_builtin()
    if name not in _TASKS:
        close = difflib.get_close_matches(str(name), list(_TASKS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: unknown task {name!r}{hint}; known: {', '.join(task_names())}")
    return _TASKS[name]


@dataclass(frozen=True)
class TaskSpec:
    """A run's task as data: the registered ``name`` and its typed ``params``.

    ``to_dict`` is what ``model.json`` stores under ``task``; ``from_dict`` reads it back (and the
    older form, the config's flat ``task:`` section, see :func:`parse_task_section`).
    """

    name: str
    params: TaskParams

    def __post_init__(self) -> None:
        cls = task_class(self.name)
        if not isinstance(self.params, cls.Params):  # type: ignore[attr-defined]
            raise ConfigError(f"task: task {self.name!r} takes {cls.__name__}.Params, got {type(self.params).__qualname__}")

    @property
    def type(self) -> TaskType:
        """The family of the task (binary ranking or retrieval)."""
        return task_class(self.name).family  # type: ignore[attr-defined,no-any-return]

    def replace(self, **changes: Any) -> "TaskSpec":
        """The same task with some parameters changed (checked again)."""
        return TaskSpec(self.name, dataclasses.replace(self.params, **changes))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type.value, "name": self.name, "params": self.params.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TaskSpec":
        """A saved spec (``{"name", "params"}``), or a config-style ``task:`` section (older
        run folders saved ``{"type": "binary", "pos_weight": 1.2}``)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"task: expected a mapping, got {type(data).__name__}")
        if "name" not in data:
            return parse_task_section({k: v for k, v in data.items() if k != "target_column"})
        unknown = set(data) - {"type", "name", "params"}
        if unknown:
            raise ConfigError(f"task: unknown key(s) {sorted(unknown)} in a saved task spec")
        return cls(str(data["name"]), _parse_params(task_class(str(data["name"])), data.get("params"), prefix="task.params."))


def parse_task_section(section: Any) -> TaskSpec:
    """The config's ``task:`` section (a mapping, or just its type) as a :class:`TaskSpec`.

    ``type`` is ``binary`` (the default), ``retrieval`` (with ``loss``: ``in_batch_softmax``, the
    default, ``pointwise`` or ``negative_sampling``) or any registered task name; every other key
    is a parameter of that task. Errors name the key (``task.temperature: ...``).
    """
    if section is None:
        section = {}
    if isinstance(section, str):
        section = {"type": section}
    if not isinstance(section, Mapping):
        raise ConfigError("task: expected a mapping")
    values = dict(section)
    kind = values.pop("type", TaskType.BINARY.value)
    if kind == TaskType.RETRIEVAL.value:
        name = values.pop("loss", "in_batch_softmax")
        cls = task_class(name, key="task.loss") if isinstance(name, str) and name in _registered() else None
        if cls is None or cls.family is not TaskType.RETRIEVAL:  # type: ignore[attr-defined]
            losses = [n for n in task_names() if _TASKS[n].family is TaskType.RETRIEVAL]  # type: ignore[attr-defined]
            raise ConfigError(f"task.loss: must be one of {losses}, got {name!r}")
    else:
        if not isinstance(kind, str) or kind not in _registered():
            choices = sorted({t.value for t in TaskType} | set(task_names()))
            raise ConfigError(f"task.type: must be one of {choices}, got {kind!r}")
        name = kind
        cls = task_class(name, key="task.type")
    return TaskSpec(name, _parse_params(cls, values, prefix="task."))


def build_task(spec: TaskSpec | Mapping[str, Any]) -> Any:
    """The task ``spec`` describes (a saved ``model.json`` dict is accepted as well).

    Fitted state (item frequencies for log-Q correction or popularity sampling) is not part of
    the spec: a training run sets it on the built task (``task.set_item_frequencies``).
    """
    if not isinstance(spec, TaskSpec):
        spec = TaskSpec.from_dict(spec)
    return task_class(spec.name).from_params(spec.params)  # type: ignore[attr-defined]


def _parse_params(cls: type, values: Any, *, prefix: str) -> TaskParams:
    if values is not None and not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.')}: expected a mapping, got {values!r}")
    try:
        return cls.Params.from_dict(values)  # type: ignore[attr-defined,no-any-return]
    except ParamError as error:
        raise ConfigError(f"{prefix}{error.key}: {error.problem}") from None


def _registered() -> dict[str, type]:
    _register_builtin()
    return _TASKS


def _register_builtin() -> None:
    """The built-in tasks register when their modules are imported: import them once."""
    import recstack.tasks  # noqa: F401  (fills _TASKS)
