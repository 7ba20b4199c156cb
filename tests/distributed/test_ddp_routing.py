"""The distributed trainer's task view: a model's training forward runs inside DDP's forward.

A sequence model trains through ``retrieval_pairs`` (a pair at every position); the view must
run that method through DDP (where DDP prepares its gradient all-reduce) and give the loss and
gradients of the plain model. Before, the view hid the model's retrieval kind and its tasks fell
back to ``forward`` (one pair per row): a different, meaningless loss. One process, gloo.
"""

import socket

import pytest
import torch
import torch.distributed as dist

from recstack.models.registry import build_model
from recstack.tasks.full_softmax import FullSoftmaxTask
from recstack.tasks.in_batch_softmax import InBatchSoftmaxTask
from recstack.workflows.distributed import DistributedContext, DistributedTraining
from tests.retrieval_models.helpers import make_batch, rich_feature_map
from tests.retrieval_models.sequence_helpers import sequence_batch, sequence_feature_map


@pytest.fixture(scope="module")
def one_process_group():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)
    dist.destroy_process_group()


def _loss_and_grads(task, model, view_task, batch, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = view_task.loss(model, batch)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    ("name", "task", "params"),
    [
        ("sasrec", FullSoftmaxTask(), {"num_layers": 1, "dropout": 0.0}),
        ("gru4rec", FullSoftmaxTask(), {"dropout": 0.0}),
        ("dssm", InBatchSoftmaxTask(logq_correction=False), {"hidden_dims": [8]}),
    ],
)
def test_the_view_trains_the_models_own_pairs_through_ddp(one_process_group, name, task, params) -> None:
    sequence = name != "dssm"
    feature_map, batch = (sequence_feature_map(), sequence_batch()) if sequence else (rich_feature_map(), make_batch(16))
    torch.manual_seed(0)
    model = build_model(name, feature_map, params).train()
    training = DistributedTraining(model=model, task=task, context=one_process_group)
    plain_loss, plain_grads = _loss_and_grads(task, model, task, batch)
    ddp_loss, ddp_grads = _loss_and_grads(task, model, training.task, batch)
    torch.testing.assert_close(ddp_loss, plain_loss)
    assert plain_grads.keys() == ddp_grads.keys() and plain_grads
    for key, grad in plain_grads.items():
        torch.testing.assert_close(ddp_grads[key], grad, msg=key)
