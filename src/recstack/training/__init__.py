"""Training: one loop (Trainer) for every model; the loss comes from a task, and callbacks
observe a TrainerState and request actions through a TrainerControl."""

from recstack.training.callbacks import (
    CheckpointCallback,
    DefaultFlowCallback,
    EarlyStopping,
    MetricHistory,
    ProgressBar,
    TensorBoardLogger,
    TrainerCallback,
)
from recstack.training.checkpoint import load_checkpoint, save_checkpoint
from recstack.training.config import (
    ConfigError,
    MixedPrecision,
    MonitorMode,
    OptimizerName,
    SchedulerName,
    TrainerConfig,
)
from recstack.training.state import TrainerControl, TrainerState
from recstack.training.trainer import Trainer

__all__ = [
    "CheckpointCallback",
    "ConfigError",
    "DefaultFlowCallback",
    "EarlyStopping",
    "MetricHistory",
    "MixedPrecision",
    "MonitorMode",
    "OptimizerName",
    "ProgressBar",
    "SchedulerName",
    "TensorBoardLogger",
    "Trainer",
    "TrainerCallback",
    "TrainerConfig",
    "TrainerControl",
    "TrainerState",
    "load_checkpoint",
    "save_checkpoint",
]
