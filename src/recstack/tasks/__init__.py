"""Tasks: the loss a model is trained with and the scores it is evaluated on.

Every task registers by name (``@register_task("binary")``) with a frozen ``Params`` dataclass;
a run's task is a :class:`TaskSpec`, parsed from the config's ``task:`` section, saved in the run
folder and rebuilt by :func:`build_task`. See docs/architecture.md, "How to add a task".
"""

from recstack.tasks.base import SCORE_HEAD, Regularized, SingleHeadTask, Task, model_regularization
from recstack.tasks.registry import (
    RegisteredTask,
    TaskParams,
    TaskSpec,
    TaskType,
    build_task,
    parse_task_section,
    register_task,
    task_class,
    task_names,
)
from recstack.tasks.binary import BinaryClassificationTask
from recstack.tasks.in_batch_softmax import InBatchSoftmaxTask
from recstack.tasks.multi_task import MultiTaskTask
from recstack.tasks.negative_sampling import NegativeDistribution, NegativeSamplingTask
from recstack.tasks.pointwise import PointwiseTask
from recstack.tasks.full_softmax import FullSoftmaxTask
from recstack.tasks.sampled_softmax import SampledSoftmaxTask
from recstack.tasks.sampled_bce import SampledBCETask

__all__ = [
    "SCORE_HEAD",
    "BinaryClassificationTask",
    "FullSoftmaxTask",
    "InBatchSoftmaxTask",
    "MultiTaskTask",
    "NegativeDistribution",
    "NegativeSamplingTask",
    "PointwiseTask",
    "SampledBCETask",
    "SampledSoftmaxTask",
    "RegisteredTask",
    "Regularized",
    "SingleHeadTask",
    "Task",
    "TaskParams",
    "TaskSpec",
    "TaskType",
    "build_task",
    "model_regularization",
    "parse_task_section",
    "register_task",
    "task_class",
    "task_names",
]
