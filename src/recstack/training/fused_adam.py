"""torch's fused Adam and AdamW with a cheaper step for many small parameters on CPU.

``torch.optim.Adam(fused=True).step`` gives every parameter its own 0-d ``step`` counter and
increments them with ``_foreach_add_``, which on CPU is a loop of ``add_`` calls, each
converting the scalar: ~4-5 us per parameter, ~100 us a step for a ranking model's 20-odd
parameters, as long as its fused update kernel. Here a group's counters are views of one
tensor, incremented by one ``add_``, and the same kernel (``torch._fused_adam_`` /
``_fused_adamw_``) runs on the same state: updates are identical to torch's
(``tests/training/test_fused_adam.py``), and ``state_dict`` holds the same keys and values.

A step where a parameter has no gradient, a GradScaler's scaled step, AMSGrad, capturable or
differentiable groups, a tensor learning rate, or parameters off the CPU take torch's own
step, unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["FusedAdam", "FusedAdamW"]


class _OneCounterTensor:
    """The step override shared by :class:`FusedAdam` and :class:`FusedAdamW`."""

    param_groups: list[dict[str, Any]]
    state: Any

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        if closure is not None or not self._fast_step_applies():
            return super().step(closure)  # type: ignore[misc]
        counters = [self._counters(group) for group in self.param_groups]
        if any(c is None for c in counters):  # the first step creates the state: torch's step
            return super().step()  # type: ignore[misc]
        for group, (steps, step_views) in zip(self.param_groups, counters):
            params = group["params"]
            states = [self.state[p] for p in params]
            steps.add_(1)
            beta1, beta2 = group["betas"]
            update = torch._fused_adamw_ if self._decoupled(group) else torch._fused_adam_
            update(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                step_views,
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
            )
        return None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # type: ignore[misc]
        self._packed_counters = {}  # the loaded counters are separate tensors again

    def _decoupled(self, group: dict[str, Any]) -> bool:
        return bool(group.get("decoupled_weight_decay", isinstance(self, torch.optim.AdamW)))

    def _fast_step_applies(self) -> bool:
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            return False  # a GradScaler's step: torch's own handles the scale and inf checks
        for group in self.param_groups:
            if not group["fused"] or group["amsgrad"] or group["capturable"] or group["differentiable"]:
                return False
            if isinstance(group["lr"], Tensor):
                return False
            for p in group["params"]:
                grad = p.grad
                if grad is None or grad.is_sparse or p.device.type != "cpu":
                    return False
        return True

    def _counters(self, group: dict[str, Any]) -> tuple[Tensor, list[Tensor]] | None:
        """The group's counters as one tensor and its per-parameter views (each parameter's
        ``state["step"]``); made once from torch's own counters after the first step."""
        packed: dict[int, tuple[Tensor, list[Tensor]]] = self.__dict__.setdefault("_packed_counters", {})
        params = group["params"]
        held = packed.get(id(group))
        if held is not None and all(self.state[p]["step"] is view for p, view in zip(params, held[1])):
            return held
        if not all("step" in self.state[p] for p in params):
            return None
        steps = torch.stack([self.state[p]["step"] for p in params])  # (P,)
        views = list(steps.unbind())
        for p, view in zip(params, views):
            self.state[p]["step"] = view
        packed[id(group)] = (steps, views)
        return steps, views


class FusedAdam(_OneCounterTensor, torch.optim.Adam):
    """``torch.optim.Adam`` (build it with ``fused=True``) with the cheaper CPU step."""


class FusedAdamW(_OneCounterTensor, torch.optim.AdamW):
    """``torch.optim.AdamW`` (build it with ``fused=True``) with the cheaper CPU step."""
