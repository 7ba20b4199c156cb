"""recstack.nn.Embedding: nn.Embedding's outputs and gradients, through a faster CPU backward."""

import pytest
import torch
from torch import nn

from recstack.nn import Embedding

ROWS, DIM = 11, 4


def _pair(**kwargs):
    torch.manual_seed(0)
    reference = nn.Embedding(ROWS, DIM, padding_idx=0, **kwargs)
    fast = Embedding(ROWS, DIM, padding_idx=0, **kwargs)
    fast.load_state_dict(reference.state_dict())
    return reference, fast


@pytest.mark.parametrize("shape", [(7,), (5, 6)])
def test_outputs_and_gradients_match_nn_embedding(shape):
    reference, fast = _pair()
    ids = torch.randint(0, ROWS, shape)
    ids.view(-1)[:3] = torch.tensor([0, 3, 3])  # padding and a repeated id
    upstream = torch.randn(*shape, DIM)
    (reference(ids) * upstream).sum().backward()
    (fast(ids) * upstream).sum().backward()
    torch.testing.assert_close(fast(ids), reference(ids))
    torch.testing.assert_close(fast.weight.grad, reference.weight.grad)
    assert (fast.weight.grad[0] == 0).all()  # the padding row never learns


def test_gradient_from_a_strided_upstream_matches():
    reference, fast = _pair()
    ids = torch.randint(0, ROWS, (3, 5))
    for table in (reference, fast):  # a slice of a concatenation: a non-contiguous gradient
        torch.cat([table(ids), table(ids) * 2], dim=-1)[..., :DIM].pow(2).sum().backward()
    torch.testing.assert_close(fast.weight.grad, reference.weight.grad)


def test_sparse_tables_keep_sparse_gradients():
    _, fast = _pair(sparse=True)
    fast(torch.tensor([1, 2, 2])).sum().backward()
    assert fast.weight.grad.is_sparse


def test_no_grad_and_frozen_tables_give_the_same_lookup():
    reference, fast = _pair()
    ids = torch.tensor([[1, 0], [4, 4]])
    with torch.no_grad():
        torch.testing.assert_close(fast(ids), reference(ids))
    fast.weight.requires_grad_(False)
    out = fast(ids)
    torch.testing.assert_close(out, reference(ids).detach())
    assert not out.requires_grad
