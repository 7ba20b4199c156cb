"""The callback contract: no-op hooks that read the state and may set control flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from recstack.training.state import TrainerControl, TrainerState

__all__ = ["CallbackHandler", "TrainerCallback"]


class TrainerCallback:
    """Base class of every callback; override the hooks you need.

    A callback observes (``state``, ``metrics``, ``logs``) and requests (by setting flags on
    ``control``); it never trains, evaluates, saves or stops by itself. A callback with state
    that must survive a resume (a patience counter, a history) returns it from
    :meth:`state_dict` as plain Python values.
    """

    def on_train_begin(self, state: TrainerState, control: TrainerControl) -> None:
        pass

    def on_epoch_begin(self, state: TrainerState, control: TrainerControl) -> None:
        pass

    def on_step_end(self, state: TrainerState, control: TrainerControl) -> None:
        pass

    def on_log(self, state: TrainerState, control: TrainerControl, logs: dict[str, float]) -> None:
        pass

    def on_evaluate(
        self, state: TrainerState, control: TrainerControl, metrics: dict[str, float]
    ) -> None:
        pass

    def on_epoch_end(self, state: TrainerState, control: TrainerControl) -> None:
        pass

    def on_save(self, state: TrainerState, control: TrainerControl, path: Path) -> None:
        pass

    def on_train_end(self, state: TrainerState, control: TrainerControl) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class CallbackHandler:
    """Calls one hook on every callback, in order."""

    def __init__(self, callbacks: Iterable[TrainerCallback]) -> None:
        self.callbacks = list(callbacks)

    def fire(self, hook: str, state: TrainerState, control: TrainerControl, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(state, control, *args)

    def state_dict(self) -> dict[str, list[dict[str, Any]]]:
        """Callback states by class name (a list: a class may appear more than once)."""
        states: dict[str, list[dict[str, Any]]] = {}
        for callback in self.callbacks:
            states.setdefault(type(callback).__name__, []).append(callback.state_dict())
        return states

    def load_state_dict(self, states: dict[str, list[dict[str, Any]]]) -> None:
        seen: dict[str, int] = {}
        for callback in self.callbacks:
            name = type(callback).__name__
            index = seen.get(name, 0)
            seen[name] = index + 1
            saved = states.get(name, [])
            if index < len(saved) and saved[index]:
                callback.load_state_dict(saved[index])
