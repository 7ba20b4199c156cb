"""BinaryClassificationTask: BCE with logits, optional pos_weight; predict gives probabilities."""

import pytest
import torch
import torch.nn.functional as F

from recstack.data.batch import Batch
from recstack.tasks import BinaryClassificationTask, Task

from .toy import LogisticRegression, planted_data


@pytest.mark.parametrize("pos_weight", [None, 1.2, 3.0])
def test_loss_matches_binary_cross_entropy_with_logits(pos_weight):
    data, model = planted_data(64), LogisticRegression()
    logits = model(data)
    expected = F.binary_cross_entropy_with_logits(
        logits, data.label, pos_weight=None if pos_weight is None else torch.tensor(pos_weight)
    )
    loss = BinaryClassificationTask(pos_weight=pos_weight).loss(model, data)
    torch.testing.assert_close(loss, expected)


def test_pos_weight_scales_only_the_positive_term():
    model = LogisticRegression()
    positives = Batch(dense={"x": torch.randn(16, 8)}, label=torch.ones(16))
    negatives = Batch(dense={"x": torch.randn(16, 8)}, label=torch.zeros(16))
    plain, weighted = BinaryClassificationTask(), BinaryClassificationTask(pos_weight=1.2)
    torch.testing.assert_close(weighted.loss(model, positives), 1.2 * plain.loss(model, positives))
    torch.testing.assert_close(weighted.loss(model, negatives), plain.loss(model, negatives))


def test_predict_is_sigmoid_of_logits():
    data, model = planted_data(32), LogisticRegression()
    task = BinaryClassificationTask()
    torch.testing.assert_close(task.predict(model, data), torch.sigmoid(model(data)))
    assert isinstance(task, Task)


def test_missing_label_and_bad_pos_weight_are_rejected():
    with pytest.raises(ValueError, match="label"):
        BinaryClassificationTask().loss(LogisticRegression(), Batch(dense={"x": torch.zeros(2, 8)}))
    with pytest.raises(ValueError, match="pos_weight"):
        BinaryClassificationTask(pos_weight=0.0)


def test_a_model_regularization_is_added_to_the_loss() -> None:
    import torch
    from torch import nn

    from recstack.data.batch import Batch
    from recstack.tasks.binary import BinaryClassificationTask

    class Penalised(nn.Module):
        def forward(self, batch):
            return torch.zeros(len(batch))  # logits (B,)

        def regularization(self, batch):
            return torch.tensor(0.25)

    batch = Batch(dense={"x": torch.zeros(4, 2)}, label=torch.tensor([1.0, 0.0, 0.0, 1.0]))
    task = BinaryClassificationTask()

    class Plain(Penalised):
        regularization = None

    assert task.loss(Penalised(), batch).item() == pytest.approx(task.loss(Plain(), batch).item() + 0.25)
