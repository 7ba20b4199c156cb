"""Tasks: the loss a model is trained with and the scores it is evaluated on."""

from recstack.tasks.base import Task
from recstack.tasks.binary import BinaryClassificationTask
from recstack.tasks.in_batch_softmax import InBatchSoftmaxTask
from recstack.tasks.negative_sampling import NegativeDistribution, NegativeSamplingTask
from recstack.tasks.pointwise import PointwiseTask

__all__ = [
    "BinaryClassificationTask",
    "InBatchSoftmaxTask",
    "NegativeDistribution",
    "NegativeSamplingTask",
    "PointwiseTask",
    "Task",
]
