import pytest
import torch
from torch import nn

from recstack.nn import MLP, Activation, Dice
from recstack.nn.dropout import Dropout


def _activations(mlp: MLP) -> list[type]:
    return [type(layer.activation) for layer in mlp.layers]


def test_output_activation_applies_to_the_last_layer_only():
    # a DSSM tower: 256-256-128 with tanh on the last layer
    tower = MLP(in_dim=32, hidden_dims=(256, 256, 128), output_activation="tanh")
    assert _activations(tower) == [nn.ReLU, nn.ReLU, nn.Tanh]
    assert tower.out_dim == 128

    hidden: list[torch.Tensor] = []
    tower.layers[1].register_forward_hook(lambda module, args, out: hidden.append(out))
    out = tower(torch.randn(64, 32))
    assert out.shape == (64, 128)
    assert (hidden[0] >= 0).all()  # ReLU below the last layer
    assert (out < 0).any() and (out.abs() < 1).all()  # tanh on top


def test_without_output_activation_every_layer_uses_activation():
    mlp = MLP(in_dim=8, hidden_dims=(16, 4), activation=Activation.RELU)
    assert _activations(mlp) == [nn.ReLU, nn.ReLU]
    assert (mlp(torch.randn(32, 8)) >= 0).all()


def test_identity_output_activation_makes_a_linear_last_layer():
    mlp = MLP(in_dim=8, hidden_dims=(16, 4), output_activation="identity")
    assert _activations(mlp) == [nn.ReLU, nn.Identity]
    layer = mlp.layers[-1]
    x = torch.randn(5, 8)
    torch.testing.assert_close(mlp(x), layer.linear(mlp.layers[0](x)))


@pytest.mark.parametrize("name", [a.value for a in Activation])
def test_every_activation_builds_and_runs(name):
    mlp = MLP(in_dim=6, hidden_dims=(5, 3), activation=name)
    assert mlp(torch.randn(4, 6)).shape == (4, 3)


def test_dice_and_prelu_are_per_layer_with_that_layers_width():
    dice_mlp = MLP(in_dim=6, hidden_dims=(80, 40), activation="dice")
    assert [layer.activation.alpha.shape[0] for layer in dice_mlp.layers] == [80, 40]
    assert all(isinstance(layer.activation, Dice) for layer in dice_mlp.layers)
    assert dice_mlp.layers[0].activation is not dice_mlp.layers[1].activation

    prelu_mlp = MLP(in_dim=6, hidden_dims=(80, 40), activation="prelu")
    assert [layer.activation.num_parameters for layer in prelu_mlp.layers] == [80, 40]


def test_batch_norm_and_dropout_are_optional():
    plain = MLP(in_dim=6, hidden_dims=(8, 4))
    assert not any(isinstance(m, (nn.BatchNorm1d, Dropout)) for m in plain.modules())
    full = MLP(in_dim=6, hidden_dims=(8, 4), batch_norm=True, dropout=0.5)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in full.modules()) == 2
    assert sum(isinstance(m, Dropout) for m in full.modules()) == 2
    full.eval()
    x = torch.randn(3, 6)
    torch.testing.assert_close(full(x), full(x))  # no dropout noise in eval


def test_padding_stays_out_of_batch_statistics_on_sequences():
    mlp = MLP(in_dim=4, hidden_dims=(8, 3), activation="dice", batch_norm=True).train()
    x = torch.randn(3, 5, 4)  # (B, L, D)
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3, [True] + [False] * 4])
    polluted = x.masked_fill(~mask.unsqueeze(-1), 50.0)
    padded_longer = torch.cat([polluted, torch.full((3, 2, 4), -7.0)], dim=1)
    mask_longer = torch.cat([mask, torch.zeros(3, 2, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(mlp(polluted, mask)[mask], mlp(x[mask]))
    torch.testing.assert_close(mlp(padded_longer, mask_longer)[mask_longer], mlp(x[mask]))


def test_rejects_bad_configuration():
    with pytest.raises(ValueError):
        MLP(in_dim=4, hidden_dims=(8,), activation="swishy")
    with pytest.raises(ValueError):
        MLP(in_dim=4, hidden_dims=())
    with pytest.raises(TypeError):
        MLP(4, (8,))  # keyword-only


@pytest.mark.parametrize("name", ["prelu", "dice", "relu"])
def test_sequences_are_processed_position_by_position_in_eval(name):
    mlp = MLP(in_dim=4, hidden_dims=(8, 3), activation=name, batch_norm=True).eval()
    x = torch.randn(2, 5, 4)  # (B, L, D): the neurons are on the last dim
    torch.testing.assert_close(mlp(x), mlp(x.reshape(10, 4)).reshape(2, 5, 3))


@pytest.mark.parametrize("batch_norm", [False, True])
def test_run_chain_equals_the_mlps_in_turn_values_and_gradients(batch_norm):
    from recstack.nn.fused import fused_paths
    from recstack.nn.mlp import run_chain

    torch.manual_seed(0)
    bottom = MLP(in_dim=6, hidden_dims=(8,), batch_norm=batch_norm)
    tower = MLP(in_dim=8, hidden_dims=(4,), head_dim=1, batch_norm=batch_norm)
    x = torch.randn(16, 6, requires_grad=True)
    chained = run_chain(x, [bottom, tower])
    chained.sum().backward()
    grads = [x.grad.clone(), *(p.grad.clone() for p in [*bottom.parameters(), *tower.parameters()])]
    for p in [x, *bottom.parameters(), *tower.parameters()]:
        p.grad = None
    with fused_paths(False):  # the modules' own layers, one by one
        reference = tower(bottom(x))
    reference.sum().backward()
    assert chained.shape == (16, 1) and torch.allclose(chained, reference, atol=1e-6)
    reference_grads = [x.grad, *(p.grad for p in [*bottom.parameters(), *tower.parameters()])]
    assert all(torch.allclose(g, r, atol=1e-5) for g, r in zip(grads, reference_grads))


def test_run_chain_refuses_a_head_before_the_last_mlp():
    from recstack.nn.mlp import run_chain

    with pytest.raises(ValueError, match="only the last MLP may have a head"):
        run_chain(torch.randn(2, 3), [MLP(in_dim=3, hidden_dims=(4,), head_dim=2), MLP(in_dim=2, hidden_dims=(2,))])
