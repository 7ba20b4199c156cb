"""TrainerConfig: parsed once, validated with errors that name the key."""

import pytest

from recstack.errors import ConfigError as SharedConfigError
from recstack.training import (
    ConfigError,
    MixedPrecision,
    MonitorMode,
    OptimizerName,
    SchedulerName,
    TrainerConfig,
)


def test_defaults_are_valid_and_frozen():
    config = TrainerConfig()
    assert config.optimizer is OptimizerName.ADAM
    with pytest.raises(AttributeError):
        config.lr = 1.0  # type: ignore[misc]


def test_from_dict_converts_strings_to_enums_and_ints_to_floats():
    config = TrainerConfig.from_dict(
        {
            "epochs": 3,
            "optimizer": "AdamW",
            "lr": 1,
            "scheduler": "cosine",
            "warmup_steps": 10,
            "mixed_precision": "bf16",
            "monitor": "logloss",
            "monitor_mode": "min",
            "patience": 2,
            "grad_clip_norm": 5,
        }
    )
    assert config.optimizer is OptimizerName.ADAMW
    assert config.scheduler is SchedulerName.COSINE
    assert config.mixed_precision is MixedPrecision.BF16
    assert config.monitor_mode is MonitorMode.MIN
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.grad_clip_norm == 5.0
    assert TrainerConfig.from_dict(config.to_dict()) == config


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"^patiense: unknown .*did you mean 'patience'"):
        TrainerConfig.from_dict({"patiense": 3})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("epochs", True),
        ("optimizer", "rmsprop"),
        ("lr", 0.0),
        ("lr", "fast"),
        ("weight_decay", -1e-4),
        ("sparse_embeddings", "yes"),
        ("scheduler", "exponential"),
        ("warmup_steps", -1),
        ("step_size", 0),
        ("gamma", 1.5),
        ("grad_clip_norm", 0.0),
        ("seed", -1),
        ("device", "gpu0"),
        ("mixed_precision", "int8"),
        ("monitor", ""),
        ("monitor_mode", "maximum"),
        ("min_delta", -0.1),
        ("patience", 0),
        ("checkpoint_every_steps", 0),
        ("log_every_steps", 0),
        ("progress", 1),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        TrainerConfig.from_dict({key: value})


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="^lr: "):
        TrainerConfig(lr=-1.0)


def test_optional_fields_accept_none():
    config = TrainerConfig.from_dict({"patience": None, "grad_clip_norm": None})
    assert config.patience is None and config.grad_clip_norm is None


def test_config_error_is_the_shared_value_error():
    assert ConfigError is SharedConfigError
    assert issubclass(ConfigError, ValueError)
