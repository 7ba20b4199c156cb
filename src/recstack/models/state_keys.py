"""Reading weights saved before a submodule moved: old state-dict keys renamed on load.

A model's logit layer moved into its MLP (``score.weight`` -> ``mlp.head.weight``), so run
folders and checkpoints written before keep loading, into the same parameters.

Example:
    >>> from torch import nn
    >>> model = nn.ModuleDict({"mlp": nn.ModuleDict({"head": nn.Linear(2, 1)})})
    >>> accept_old_keys(model, {"score.": "mlp.head."})
    >>> model.load_state_dict({"score.weight": torch.ones(1, 2), "score.bias": torch.zeros(1)})
    <All keys matched successfully>
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["accept_old_keys"]


def accept_old_keys(module: nn.Module, renames: Mapping[str, str]) -> None:
    """Let ``module.load_state_dict`` read keys starting with an old prefix as the new one.

    Args:
        module: the module whose state dict changed (its own prefix is added on load, so this
            works when it is a submodule too).
        renames: ``{old prefix: new prefix}``, relative to ``module``; a key already present
            under the new name wins.
    """
    renames = dict(renames)

    def rename(_module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
        for old, new in renames.items():
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                renamed = prefix + new + key[len(prefix + old) :]
                if renamed not in state_dict:
                    state_dict[renamed] = state_dict.pop(key)

    module.register_load_state_dict_pre_hook(rename)


assert torch  # the doctest's namespace
