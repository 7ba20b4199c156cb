"""recstack.nn.Embedding: nn.Embedding's outputs and gradients, through a faster CPU backward."""

import pytest
import torch
from torch import nn

from recstack.nn import Embedding
from recstack.nn import table as table_module

ROWS, DIM = 11, 4


@pytest.fixture(autouse=True, params=["index_add path", "torch path"])
def one_table_path(request, monkeypatch):
    """Every test runs with single-table lookups on each path (the threshold is a speed choice)."""
    if request.param == "index_add path":
        monkeypatch.setattr(table_module, "MIN_IDS_FOR_ONE_TABLE", 0)
    return request.param


def _pair(**kwargs):
    torch.manual_seed(0)
    reference = nn.Embedding(ROWS, DIM, padding_idx=0, **kwargs)
    fast = Embedding(ROWS, DIM, padding_idx=0, **kwargs)
    fast.load_state_dict(reference.state_dict())
    return reference, fast


@pytest.mark.parametrize("shape", [(7,), (5, 6)])
def test_outputs_and_gradients_match_nn_embedding(shape, one_table_path):
    reference, fast = _pair()
    ids = torch.randint(0, ROWS, shape)
    ids.view(-1)[:3] = torch.tensor([0, 3, 3])  # padding and a repeated id
    upstream = torch.randn(*shape, DIM)
    (reference(ids) * upstream).sum().backward()
    (fast(ids) * upstream).sum().backward()
    torch.testing.assert_close(fast(ids), reference(ids))
    torch.testing.assert_close(fast.weight.grad, reference.weight.grad)
    assert (fast.weight.grad[0] == 0).all()  # the padding row never learns
    assert _took_index_add(fast(ids)) == (one_table_path == "index_add path")


def _took_index_add(out: torch.Tensor) -> bool:
    """Whether ``out`` comes from the index_add Function (through at most one view op)."""
    nodes = [out.grad_fn, *(fn for fn, _ in out.grad_fn.next_functions if fn is not None)]
    return any(type(node).__name__.startswith("_StackedLookups") for node in nodes)


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


def test_lookup_fields_is_one_node_with_each_tables_gradient_shared_tables_included():
    from recstack.nn import lookup_fields

    torch.manual_seed(0)
    tables = [Embedding(ROWS, DIM, padding_idx=0), Embedding(5, DIM, padding_idx=0)]
    reference = [nn.Embedding(ROWS, DIM, padding_idx=0), nn.Embedding(5, DIM, padding_idx=0)]
    for fast, ref in zip(tables, reference):
        ref.load_state_dict(fast.state_dict())
    # fields 0 and 2 share table 0 (an item id and, say, a previous item id); padding and repeats
    ids = [torch.tensor([0, 3, 3, 7]), torch.tensor([1, 4, 0, 4]), torch.tensor([3, 0, 10, 3])]
    fields = lookup_fields([tables[0], tables[1], tables[0]], ids)  # (4, 3, DIM)
    expected = torch.stack([reference[0](ids[0]), reference[1](ids[1]), reference[0](ids[2])], dim=-2)
    torch.testing.assert_close(fields, expected)
    assert type(fields.grad_fn).__name__.startswith("_StackedLookups")  # one autograd node
    upstream = torch.randn(4, 3, DIM)
    (fields * upstream).sum().backward()
    (expected * upstream).sum().backward()
    for fast, ref in zip(tables, reference):
        torch.testing.assert_close(fast.weight.grad, ref.weight.grad)
        assert (fast.weight.grad[0] == 0).all()  # padding rows never learn


def test_lookup_fields_rejects_tables_of_different_dims():
    from recstack.nn import lookup_fields

    with pytest.raises(ValueError, match=r"one dim.*\[1, 4\]"):
        lookup_fields([Embedding(ROWS, DIM), Embedding(ROWS, 1)], [torch.tensor([1]), torch.tensor([2])])


def test_lookup_many_shares_a_node_per_dim_and_shape_with_each_tables_gradient():
    from recstack.nn import lookup_many

    torch.manual_seed(0)
    shapes = [(ROWS, DIM), (7, DIM), (5, 1)]
    tables = [Embedding(rows, dim, padding_idx=0) for rows, dim in shapes]
    reference = [nn.Embedding(rows, dim, padding_idx=0) for rows, dim in shapes]
    for fast, ref in zip(tables, reference):
        ref.load_state_dict(fast.state_dict())
    ids = [torch.tensor([0, 3, 3, 7]), torch.tensor([6, 6, 1, 0]), torch.tensor([[1, 4], [4, 0]])]
    outs = lookup_many(tables, ids)
    assert outs[0].grad_fn.next_functions[0][0] is outs[1].grad_fn.next_functions[0][0]  # one lookup node
    for out, ref, i in zip(outs, reference, ids):
        torch.testing.assert_close(out, ref(i))
    (outs[0].pow(2).sum() + outs[1].sum() * 2 + outs[2].sum() * 3).backward()
    (reference[0](ids[0]).pow(2).sum() + reference[1](ids[1]).sum() * 2 + reference[2](ids[2]).sum() * 3).backward()
    for fast, ref in zip(tables, reference):
        torch.testing.assert_close(fast.weight.grad, ref.weight.grad)


def test_lookup_many_falls_back_to_each_table_when_one_is_not_fast():
    from recstack.nn import lookup_many

    tables = [Embedding(ROWS, DIM), nn.Embedding(ROWS, DIM)]
    outs = lookup_many(tables, [torch.tensor([1]), torch.tensor([2])])
    assert not any(_took_index_add(out) for out in outs)
    torch.testing.assert_close(outs[1], tables[1].weight[2:3])
