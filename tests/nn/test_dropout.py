"""recstack's CPU dropout keeps F.dropout's contract: rate, scale, gradient, seeding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recstack.nn.dropout import Dropout, dropout
from recstack.nn.sequence import attention_mask, attention_with_dropout


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5, 0.9])
def test_drops_at_rate_p_and_keeps_the_mean(p: float) -> None:
    torch.manual_seed(0)
    y = dropout(torch.ones(2_000_003), p)  # not a multiple of 4: the last draw is cut
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - p) < 0.002
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, kept[0].item()))  # one scale
    assert abs(kept[0].item() - 1 / (1 - p)) < 1e-3
    assert abs(y.double().mean().item() - 1.0) < 0.01


def test_neighbouring_elements_are_dropped_independently() -> None:
    # four elements share one 64-bit draw: their masks must still be independent
    torch.manual_seed(1)
    p = 0.3
    lanes = (dropout(torch.ones(4_000_000), p) == 0).view(-1, 4).double()
    for a in range(4):
        for b in range(a + 1, 4):
            both = (lanes[:, a] * lanes[:, b]).mean().item()
            assert abs(both - p * p) < 0.003, (a, b, both)


def test_gradient_is_the_mask_times_the_scale() -> None:
    torch.manual_seed(2)
    x = torch.randn(7, 13, 5, requires_grad=True)
    y = dropout(x, 0.25)
    y.sum().backward()
    kept = y.detach() != 0
    scale = 1 / (1 - 0.25)
    assert torch.allclose(x.grad, kept.float() * scale, atol=1e-4)
    assert torch.allclose(y.detach(), x.detach() * kept * scale, atol=1e-5)


def test_seed_reproduces_the_mask_and_another_seed_changes_it() -> None:
    x = torch.ones(10_000)
    torch.manual_seed(3)
    first = dropout(x, 0.2)
    torch.manual_seed(3)
    again = dropout(x, 0.2)
    torch.manual_seed(4)
    other = dropout(x, 0.2)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_identity_outside_training_and_at_p_zero_zero_at_p_one() -> None:
    x = torch.randn(4, 6)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    module = Dropout(0.5).eval()
    assert module(x) is x
    assert module.state_dict() == {}


def test_keeps_the_input_dtype_and_shape() -> None:
    x = torch.randn(3, 5, 7, dtype=torch.bfloat16)
    y = dropout(x, 0.2)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_probability_outside_0_1_is_a_value_error(p: float) -> None:
    with pytest.raises(ValueError, match="dropout probability must be in"):
        Dropout(p)
    with pytest.raises(ValueError, match="dropout probability must be in"):
        dropout(torch.ones(3), p)


def test_attention_with_dropout_is_sdpa_when_nothing_is_dropped() -> None:
    torch.manual_seed(5)
    q, k, v = (torch.randn(3, 2, 6, 4) for _ in range(3))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] + [False] * 5])
    allowed = attention_mask(mask, causal=True)
    bias = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert torch.allclose(attention_with_dropout(q, k, v, bias, 0.0), expected, atol=1e-6)


def test_attention_with_dropout_drops_weights_not_rows() -> None:
    # with dropout the expected output is still the attention output
    torch.manual_seed(6)
    q, k, v = (torch.randn(1, 1, 4, 3) for _ in range(3))
    bias = torch.zeros(1, 1, 4, 4)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    mean = torch.stack([attention_with_dropout(q, k, v, bias, 0.3) for _ in range(20_000)]).mean(0)
    assert torch.allclose(mean, expected, atol=0.03)
