import itertools

import torch

from recstack.nn import FactorizationMachine


def test_equals_explicit_sum_of_pairwise_dot_products():
    embeddings = torch.randn(4, 5, 3, dtype=torch.float64)  # (B, F, D)
    expected = torch.zeros(4, dtype=torch.float64)
    for i, j in itertools.combinations(range(5), 2):
        expected += (embeddings[:, i] * embeddings[:, j]).sum(dim=-1)
    torch.testing.assert_close(FactorizationMachine()(embeddings), expected)


def test_hand_computed_example():
    # fields [1, 2], [3, 0], [0, -1]: <a,b> + <a,c> + <b,c> = 3 - 2 + 0 = 1
    embeddings = torch.tensor([[[1.0, 2.0], [3.0, 0.0], [0.0, -1.0]]])
    assert FactorizationMachine()(embeddings).tolist() == [1.0]


def test_single_field_has_no_interaction_and_output_is_one_value_per_sample():
    out = FactorizationMachine()(torch.randn(6, 1, 4))
    assert out.shape == (6,)
    torch.testing.assert_close(out, torch.zeros(6), atol=1e-6, rtol=0)


def test_training_node_has_the_interactions_gradient_and_value():
    from recstack.nn.fm import _FMFunction

    torch.manual_seed(0)
    fields = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_FMFunction.apply, (fields,))
    fm = FactorizationMachine()
    trained = fm(fields)
    assert type(trained.grad_fn).__name__ == "_FMFunctionBackward"
    with torch.no_grad():
        torch.testing.assert_close(trained, fm(fields))  # the evaluation path
