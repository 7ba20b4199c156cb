"""Callbacks observe the TrainerState and request actions through TrainerControl."""

from recstack.training.callbacks.base import CallbackHandler, TrainerCallback
from recstack.training.callbacks.checkpointing import CheckpointCallback
from recstack.training.callbacks.early_stopping import EarlyStopping
from recstack.training.callbacks.flow import DefaultFlowCallback
from recstack.training.callbacks.metric_history import MetricHistory
from recstack.training.callbacks.progress_bar import ProgressBar
from recstack.training.callbacks.tensorboard_logger import TensorBoardLogger

__all__ = [
    "CallbackHandler",
    "CheckpointCallback",
    "DefaultFlowCallback",
    "EarlyStopping",
    "MetricHistory",
    "ProgressBar",
    "TensorBoardLogger",
    "TrainerCallback",
]
