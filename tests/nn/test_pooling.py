import numpy as np
import pytest
import torch

from recstack.nn import Pooling, masked_pool

B, L, D = 4, 5, 3
# row 0 full, row 1 partial, row 2 empty, row 3 a single position
MASK = np.array(
    [[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0]], dtype=bool
)


def _reference(values, mask, mode, weights):
    """Row-by-row NumPy pooling over real positions only."""
    out = np.zeros((B, D))
    for b in range(B):
        v, w = values[b][mask[b]], weights[b][mask[b]]
        if len(v) == 0:
            continue
        if mode == "mean":
            out[b] = v.mean(axis=0)
        elif mode == "sum":
            out[b] = v.sum(axis=0)
        elif mode == "max":
            out[b] = v.max(axis=0)
        elif mode == "weighted_sum":
            out[b] = (w[:, None] * v).sum(axis=0)
        elif w.sum() != 0:
            out[b] = (w[:, None] * v).sum(axis=0) / w.sum()
    return out


def _inputs():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(B, L, D)) - 5.0  # all negative: max must not pick a 0 pad
    weights = rng.uniform(0.1, 2.0, size=(B, L))
    return values, weights


@pytest.mark.parametrize("mode", list(Pooling))
def test_matches_numpy_reference_and_ignores_padding(mode):
    values, weights = _inputs()
    polluted = values.copy()
    polluted[~MASK] = np.nan  # padding may hold anything
    polluted_weights = weights.copy()
    polluted_weights[~MASK] = 1e6
    out = masked_pool(
        torch.tensor(polluted),
        torch.tensor(MASK),
        mode=mode,
        weights=torch.tensor(polluted_weights),
    )
    np.testing.assert_allclose(out.numpy(), _reference(values, MASK, mode.value, weights))
    assert (out[2] == 0).all()  # empty row -> zeros, not NaN


@pytest.mark.parametrize("mode", [m.value for m in Pooling])
def test_gradients_are_finite_with_an_empty_row(mode):
    values = torch.randn(B, L, D, requires_grad=True)
    weights = torch.rand(B, L, requires_grad=True)
    masked_pool(values, torch.tensor(MASK), mode=mode, weights=weights).sum().backward()
    assert torch.isfinite(values.grad).all()
    assert (values.grad[torch.tensor(~MASK)] == 0).all()


def test_weighted_mean_with_zero_total_weight_gives_zeros():
    values = torch.randn(1, 3, D)
    mask = torch.ones(1, 3, dtype=torch.bool)
    out = masked_pool(values, mask, mode="weighted_mean", weights=torch.zeros(1, 3))
    assert out.tolist() == [[0.0] * D]


def test_no_mask_means_every_position_is_real():
    values = torch.randn(B, L, D)
    torch.testing.assert_close(masked_pool(values, None, mode=Pooling.MEAN), values.mean(dim=1))
    torch.testing.assert_close(masked_pool(values, None, mode="max"), values.amax(dim=1))


def test_weighted_modes_need_weights_and_unknown_modes_are_rejected():
    values, mask = torch.randn(B, L, D), torch.tensor(MASK)
    with pytest.raises(ValueError, match="weights"):
        masked_pool(values, mask, mode="weighted_sum")
    with pytest.raises(ValueError):
        masked_pool(values, mask, mode="median")
