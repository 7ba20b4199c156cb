import copy

import pytest
import torch

from recstack.nn import ActivationUnit, TargetAttention

B, L, D = 4, 5, 6
# row 0 full, row 1 half, row 2 a single behaviour, row 3 no behaviour at all
MASK = torch.tensor(
    [[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4, [False] * 5]
)


def _inputs():
    return torch.randn(B, D), torch.randn(B, L, D)


def test_activation_unit_scores_concat_of_query_key_difference_and_product():
    unit = ActivationUnit(dim=D, hidden_dims=(8, 4), activation="prelu")
    assert unit.mlp.layers[0].linear.in_features == 4 * D
    query, keys = _inputs()
    q = query.unsqueeze(1).expand(B, L, D)
    expected = unit.score(unit.mlp(torch.cat([q, keys, q - keys, q * keys], dim=-1)))
    torch.testing.assert_close(unit(query, keys), expected.squeeze(-1))


def test_weights_are_raw_scores_without_softmax_and_zero_at_padding():
    attention = TargetAttention(dim=D, activation="prelu")
    query, keys = _inputs()
    weights = attention.attention_weights(query, keys, MASK)
    scores = attention.unit(query, keys.masked_fill(~MASK.unsqueeze(-1), 0.0))
    assert (weights[~MASK] == 0).all()
    torch.testing.assert_close(weights[MASK], scores[MASK])
    assert not torch.allclose(weights[0].sum(), torch.tensor(1.0))  # not normalised


def test_output_is_weighted_sum_of_keys():
    attention = TargetAttention(dim=D).eval()
    query, keys = _inputs()
    weights = attention.attention_weights(query, keys, MASK)
    expected = (weights.unsqueeze(-1) * keys.masked_fill(~MASK.unsqueeze(-1), 0)).sum(dim=1)
    torch.testing.assert_close(attention(query, keys, MASK), expected)


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_padding_values_and_extra_padding_length_do_not_change_the_output(softmax, training):
    attention = TargetAttention(dim=D, softmax=softmax).train(training)
    query, keys = _inputs()
    reference = attention(query, keys, MASK)

    garbage = keys.masked_fill(~MASK.unsqueeze(-1), 0.0) + (~MASK).unsqueeze(-1) * 1e4
    longer = torch.cat([garbage, torch.randn(B, 3, D) * 100], dim=1)  # (B, L + 3, D)
    longer_mask = torch.cat([MASK, torch.zeros(B, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(attention(query, longer, longer_mask), reference)


def test_softmax_weights_sum_to_one_and_an_all_padding_row_gives_zeros():
    attention = TargetAttention(dim=D, softmax=True)
    query, keys = _inputs()
    keys.requires_grad_(True)
    weights = attention.attention_weights(query, keys, MASK)
    torch.testing.assert_close(weights[:3].sum(dim=-1), torch.ones(3))
    assert (weights[~MASK] == 0).all()

    out = attention(query, keys, MASK)
    assert not torch.isnan(out).any()
    assert (out[3] == 0).all()
    out.sum().backward()
    assert not any(torch.isnan(p.grad).any() for p in attention.parameters())
    assert not torch.isnan(keys.grad).any()


def test_all_padding_row_gives_zeros_without_softmax():
    attention = TargetAttention(dim=D)
    query, keys = _inputs()
    assert (attention(query, keys, MASK)[3] == 0).all()


def test_gradients_flow_to_the_activation_unit():
    attention = TargetAttention(dim=D, hidden_dims=(8, 4), activation="dice")
    query, keys = _inputs()
    attention(query, keys, MASK).pow(2).sum().backward()
    for name, param in attention.unit.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("softmax", [False, True])
def test_packed_training_path_matches_the_padded_one(softmax):
    """forward_packed (DIN's training path) gives forward's output and gradients."""
    from recstack.nn import PackedPositions

    torch.manual_seed(1)
    attention = TargetAttention(dim=D, softmax=softmax).train()
    query, keys = _inputs()
    positions = PackedPositions.from_mask(MASK)
    results = []
    for packed in (False, True):
        q, k = query.clone().requires_grad_(), keys.clone().requires_grad_()
        attention.zero_grad()
        if packed:
            out = attention.forward_packed(q, k.reshape(-1, D).index_select(0, positions.flat), positions)
        else:
            out = attention(q, k, MASK)
        (out * torch.arange(B * D, dtype=out.dtype).view(B, D)).sum().backward()
        results.append((out, q.grad, k.grad, [p.grad.clone() for p in attention.parameters()]))
    (out, gq, gk, gp), (out_p, gq_p, gk_p, gp_p) = results
    torch.testing.assert_close(out_p, out)
    assert (out_p[3] == 0).all()  # the row without behaviours
    torch.testing.assert_close(gq_p, gq)
    torch.testing.assert_close(gk_p, gk)
    for grad_p, grad in zip(gp_p, gp):
        torch.testing.assert_close(grad_p, grad)


def test_packed_path_with_no_real_position_gives_zeros():
    from recstack.nn import PackedPositions

    attention = TargetAttention(dim=D).train()
    positions = PackedPositions.from_mask(torch.zeros(B, L, dtype=torch.bool))
    out = attention.forward_packed(torch.randn(B, D), torch.zeros(0, D), positions)
    assert out.shape == (B, D) and (out == 0).all()


def test_from_mask_pads_the_packed_size_with_the_last_real_position():
    from recstack.nn import PackedPositions

    plain = PackedPositions.from_mask(MASK)
    padded = PackedPositions.from_mask(MASK, pad_to=4)
    count = int(MASK.sum())  # 9
    assert plain.count == padded.count == count and len(plain.flat) == count
    assert len(padded.flat) == len(padded.rows) == 12
    torch.testing.assert_close(padded.flat[:count], plain.flat)
    assert (padded.flat[count:] == plain.flat[-1]).all() and (padded.rows[count:] == plain.rows[-1]).all()
    empty = PackedPositions.from_mask(torch.zeros(B, L, dtype=torch.bool), pad_to=4)
    assert empty.count == 0 and len(empty.flat) == 0


@pytest.mark.parametrize("activation", ["dice", "prelu"])
@pytest.mark.parametrize("softmax", [False, True])
def test_padded_packed_positions_change_neither_output_nor_gradients(softmax, activation):
    """Padding the packed size (kernel reuse under CPU autocast) is invisible: the padded
    keys stay out of Dice's statistics, the scores and the pooling."""
    from recstack.nn import PackedPositions

    torch.manual_seed(2)
    original = TargetAttention(dim=D, softmax=softmax, activation=activation).train()
    query, keys = _inputs()
    results = []
    for pad_to in (1, 8):
        attention = copy.deepcopy(original)  # same weights and running statistics
        positions = PackedPositions.from_mask(MASK, pad_to=pad_to)
        q, k = query.clone().requires_grad_(), keys.clone().requires_grad_()
        out = attention.forward_packed(q, k.reshape(-1, D).index_select(0, positions.flat), positions)
        (out * torch.arange(B * D, dtype=out.dtype).view(B, D)).sum().backward()
        running = [b.clone() for b in attention.buffers()]
        results.append((out, q.grad, k.grad, [p.grad.clone() for p in attention.parameters()], running))
    (out, gq, gk, gp, rb), (out_p, gq_p, gk_p, gp_p, rb_p) = results
    assert len(PackedPositions.from_mask(MASK, pad_to=8).flat) == 16
    torch.testing.assert_close(out_p, out)
    torch.testing.assert_close(gq_p, gq)
    torch.testing.assert_close(gk_p, gk)
    for grad_p, grad in zip(gp_p, gp):
        torch.testing.assert_close(grad_p, grad)
    for buffer_p, buffer in zip(rb_p, rb):  # Dice's running statistics saw the real rows only
        torch.testing.assert_close(buffer_p, buffer)


def test_packing_pads_only_under_cpu_autocast():
    from recstack.nn.attention import packing_multiple

    cpu = torch.device("cpu")
    assert packing_multiple(cpu) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert packing_multiple(cpu) == 1024
    assert packing_multiple(torch.device("cuda")) == 1
