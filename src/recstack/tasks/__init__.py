"""Tasks: the loss a model is trained with and the scores it is evaluated on."""

from recstack.tasks.base import Task
from recstack.tasks.binary import BinaryClassificationTask

__all__ = ["BinaryClassificationTask", "Task"]
