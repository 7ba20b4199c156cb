import pytest
import torch

from recstack.nn import AUGRU, CausalSelfAttentionEncoder, GRUEncoder, last_position
from recstack.nn.sequence import PackedSteps, attention_mask, recency_positions

B, L, D, H = 4, 6, 8, 5
LENGTHS = torch.tensor([6, 3, 1, 0])  # full, half, one behaviour, empty
MASK = torch.arange(L).unsqueeze(0) < LENGTHS.unsqueeze(1)  # (B, L) left-aligned


def _encoders():
    return {
        "attention_pre": CausalSelfAttentionEncoder(D, num_heads=2, max_len=L),
        "attention_post": CausalSelfAttentionEncoder(D, num_heads=2, max_len=L, pre_norm=False),
        "attention_bidirectional": CausalSelfAttentionEncoder(D, max_len=L, causal=False),
        "attention_no_positions": CausalSelfAttentionEncoder(D, max_len=L, positional=False),
        # no attention dropout: CPU training takes SDPA's fused kernel instead of the math path
        "attention_fused": CausalSelfAttentionEncoder(D, num_heads=2, max_len=L, attention_dropout=0.0),
        "gru": GRUEncoder(D, H),
        "gru_2_layers": GRUEncoder(D, H, num_layers=2, dropout=0.1),
        "gru_packed": GRUEncoder(D, H, pack=True),
    }


ENCODERS = list(_encoders())


def _encoder(name):
    return _encoders()[name]


def _with_padding_changed(x):
    return torch.where(MASK.unsqueeze(-1), x, torch.randn_like(x) * 100)


@pytest.mark.parametrize("name", ENCODERS)
def test_shapes_and_padded_outputs_zero(name):
    encoder = _encoder(name).eval()
    x = torch.randn(B, L, D)
    out = encoder(x, MASK)
    assert out.shape == (B, L, encoder.hidden_dim if isinstance(encoder, GRUEncoder) else D)
    assert (out[~MASK] == 0).all()
    assert out[MASK].abs().sum(-1).gt(0).all()
    assert torch.isfinite(out).all()  # the empty row gives zeros, not NaN


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("training", [False, True])
def test_padding_values_do_not_change_real_outputs(name, training):
    encoder = _encoder(name).train(training)
    x = torch.randn(B, L, D)
    changed = _with_padding_changed(x)
    torch.manual_seed(1)
    first = encoder(x, MASK)
    torch.manual_seed(1)  # the same dropout masks
    second = encoder(changed, MASK)
    torch.testing.assert_close(first, second)


@pytest.mark.parametrize("name", ["attention_pre", "attention_post", "attention_no_positions", "attention_fused", "gru", "gru_packed"])
def test_causal_output_at_t_ignores_inputs_after_t(name):
    encoder = _encoder(name).eval()
    x = torch.randn(1, L, D)
    mask = torch.ones(1, L, dtype=torch.bool)
    out = encoder(x, mask)
    for t in range(L - 1):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn(1, L - t - 1, D)
        torch.testing.assert_close(encoder(changed, mask)[:, : t + 1], out[:, : t + 1])
        assert not torch.allclose(encoder(changed, mask)[:, t + 1 :], out[:, t + 1 :])


def test_bidirectional_attention_reads_later_positions():
    encoder = CausalSelfAttentionEncoder(D, max_len=L, causal=False).eval()
    x, mask = torch.randn(1, L, D), torch.ones(1, L, dtype=torch.bool)
    changed = x.clone()
    changed[:, -1] = torch.randn(D)
    assert not torch.allclose(encoder(changed, mask)[:, 0], encoder(x, mask)[:, 0])


def test_attention_mask_keys_real_and_past_plus_self():
    allowed = attention_mask(MASK, causal=True)
    assert allowed.shape == (B, 1, L, L)
    row = allowed[1, 0]  # length 3
    assert row[2, :3].all() and not row[2, 3:].any()
    assert row[1, :2].all() and not row[1, 2:].any()  # causal
    assert row[4].tolist() == [True, True, True, False, True, False]  # padded query also reads itself
    assert allowed[3, 0].equal(torch.eye(L, dtype=torch.bool))  # empty row: itself only, no NaN
    assert attention_mask(MASK, causal=False)[1, 0, 0, :3].all()


def test_positional_embedding_distinguishes_order():
    encoder = CausalSelfAttentionEncoder(D, max_len=L, causal=False).eval()
    x, mask = torch.randn(1, L, D), torch.ones(1, L, dtype=torch.bool)
    swapped = x[:, [1, 0, 2, 3, 4, 5]]
    assert not torch.allclose(encoder(x, mask)[:, 0], encoder(swapped, mask)[:, 1])
    unordered = CausalSelfAttentionEncoder(D, max_len=L, causal=False, positional=False).eval()
    torch.testing.assert_close(unordered(x, mask)[:, 0], unordered(swapped, mask)[:, 1])


def test_explicit_positions_and_recency_positions():
    positions = recency_positions(MASK)
    assert positions[0].tolist() == [5, 4, 3, 2, 1, 0]
    assert positions[1].tolist() == [2, 1, 0, 0, 0, 0]
    assert positions[3].tolist() == [0] * L
    encoder = CausalSelfAttentionEncoder(D, max_len=L).eval()
    x = torch.randn(B, L, D)
    default = torch.arange(L).expand(B, L)
    torch.testing.assert_close(encoder(x, MASK, default), encoder(x, MASK))
    assert not torch.allclose(encoder(x, MASK, positions)[1], encoder(x, MASK)[1])


def test_too_long_sequence_and_bad_heads_raise():
    with pytest.raises(ValueError, match="max_len"):
        CausalSelfAttentionEncoder(D, max_len=L - 1)(torch.randn(B, L, D), MASK)
    with pytest.raises(ValueError, match="num_heads"):
        CausalSelfAttentionEncoder(D, num_heads=3, max_len=L)


@pytest.mark.parametrize("name", ENCODERS)
def test_gradients_reach_every_parameter_and_the_inputs(name):
    encoder = _encoder(name).train()
    x = torch.randn(B, L, D, requires_grad=True)
    encoder(x, MASK).sum().backward()
    for param_name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, param_name
    assert x.grad[MASK].abs().sum() > 0
    assert (x.grad[~MASK] == 0).all()  # padding never reaches the output


@pytest.mark.parametrize("name", ENCODERS)
def test_eval_mode_is_deterministic(name):
    encoder = _encoder(name).eval()
    x = torch.randn(B, L, D)
    torch.testing.assert_close(encoder(x, MASK), encoder(x, MASK), rtol=0, atol=0)


@pytest.mark.parametrize("attention_dropout", [None, 0.0])
@pytest.mark.parametrize("training", [False, True])
def test_fully_padded_batch_has_no_nan(training, attention_dropout):
    encoder = CausalSelfAttentionEncoder(D, max_len=L, attention_dropout=attention_dropout).train(training)
    mask = torch.zeros(B, L, dtype=torch.bool)
    x = torch.randn(B, L, D, requires_grad=True)
    out = encoder(x, mask)
    assert (out == 0).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (GRUEncoder(D, H)(x, mask) == 0).all()


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("pre_norm, causal", [(True, True), (False, False)])
@pytest.mark.parametrize("queries", [1, 3])
def test_queries_give_the_first_q_outputs_of_the_full_encoding_and_their_gradients(num_layers, pre_norm, causal, queries):
    torch.manual_seed(0)
    # dropout 0 in training: the two paths draw different dropout masks otherwise
    encoder = CausalSelfAttentionEncoder(D, num_heads=2, max_len=L, num_layers=num_layers, pre_norm=pre_norm, causal=causal, dropout=0.0)
    x = torch.randn(B, L, D)
    mask = MASK.clone()
    mask[3, 0] = True  # the query slot is real in every row, as BST's target slot
    full_x, part_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    full = encoder(full_x, mask)[:, :queries]
    full.square().sum().backward()
    full_grads = [parameter.grad.clone() for parameter in encoder.parameters()]
    encoder.zero_grad()
    part = encoder(part_x, mask, queries=queries)
    assert part.shape == (B, queries, D)
    torch.testing.assert_close(part, full)
    part.square().sum().backward()
    torch.testing.assert_close(part_x.grad, full_x.grad)
    for parameter, expected in zip(encoder.parameters(), full_grads):
        torch.testing.assert_close(parameter.grad, expected)
    encoder.eval()  # and with the model's own dropout switched off by eval
    with torch.no_grad():
        torch.testing.assert_close(encoder(x, mask, queries=queries), encoder(x, mask)[:, :queries])


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("pre_norm, causal, positional", [(True, True, True), (False, False, True), (True, True, False)])
@pytest.mark.parametrize("num_heads", [1, 2])
def test_encode_packed_is_the_padded_encoding_at_real_positions_with_its_gradients(num_layers, pre_norm, causal, positional, num_heads):
    torch.manual_seed(0)
    # dropout 0 in training: the two paths draw different dropout masks otherwise
    encoder = CausalSelfAttentionEncoder(
        D, num_heads=num_heads, max_len=L, num_layers=num_layers, pre_norm=pre_norm, causal=causal, positional=positional, dropout=0.0
    )
    x = torch.randn(B, L, D)
    positions = recency_positions(MASK)
    padded_x, packed_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    padded = encoder(padded_x, MASK, positions)[MASK]  # (P, D)
    weights = torch.randn_like(padded)
    (padded * weights).sum().backward()
    padded_grads = [parameter.grad.clone() for parameter in encoder.parameters()]
    encoder.zero_grad()
    packed = encoder.encode_packed(packed_x[MASK], MASK, positions)
    assert packed.shape == (int(MASK.sum()), D)
    torch.testing.assert_close(packed, padded)
    (packed * weights).sum().backward()
    torch.testing.assert_close(packed_x.grad, padded_x.grad)
    assert (packed_x.grad[~MASK] == 0).all()  # the padding's inputs get no gradient
    for parameter, expected in zip(encoder.parameters(), padded_grads):
        torch.testing.assert_close(parameter.grad, expected)
    encoder.eval()  # and with the model's own dropout switched off by eval
    with torch.no_grad():
        torch.testing.assert_close(encoder.encode_packed(x[MASK], MASK, positions), encoder(x, MASK, positions)[MASK])
        torch.testing.assert_close(encoder.encode_packed(x[MASK], MASK), encoder(x, MASK)[MASK])  # positions 0 .. L - 1


@pytest.mark.parametrize("attention_dropout", [None, 0.0])
def test_encode_packed_in_training_and_on_an_empty_batch(attention_dropout):
    encoder = CausalSelfAttentionEncoder(D, num_heads=2, max_len=L, attention_dropout=attention_dropout).train()
    rows = torch.randn(int(MASK.sum()), D, requires_grad=True)
    out = encoder.encode_packed(rows, MASK)
    assert out.shape == rows.shape and torch.isfinite(out).all()
    out.sum().backward()
    assert all(parameter.grad is not None for parameter in encoder.parameters())
    empty = encoder.encode_packed(torch.randn(0, D), torch.zeros(B, L, dtype=torch.bool))
    assert empty.shape == (0, D)
    with pytest.raises(ValueError, match="exceeds the encoder's max_len"):
        encoder.encode_packed(torch.randn(B * (L + 1), D), torch.ones(B, L + 1, dtype=torch.bool))


def test_queries_out_of_range_raise():
    encoder = CausalSelfAttentionEncoder(D, max_len=L)
    with pytest.raises(ValueError, match="queries must be in 1..6"):
        encoder(torch.randn(B, L, D), MASK, queries=0)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_gru_encoder_packed_steps_give_nn_grus_padded_outputs_and_gradients(num_layers):
    # the packed step loop (CPU training and inference) against nn.GRU over the padded tensor
    # (export, pack=False): same outputs and gradients for every input and parameter
    padded = GRUEncoder(D, H, num_layers=num_layers, pack=False)
    packed = GRUEncoder(D, H, num_layers=num_layers)
    packed.load_state_dict(padded.state_dict())
    assert packed.pack
    x = torch.randn(B, L, D, requires_grad=True)
    got, expected = packed(x, MASK), padded(x, MASK)
    torch.testing.assert_close(got, expected)
    assert (got[~MASK] == 0).all()
    weights = torch.randn(B, L, H)
    inputs = [x, *packed.parameters()]
    grads_packed = torch.autograd.grad((got * weights).square().sum(), inputs)
    grads_padded = torch.autograd.grad((expected * weights).square().sum(), [x, *padded.parameters()])
    for a, b in zip(grads_packed, grads_padded):
        torch.testing.assert_close(a, b)


def test_recurrent_blocks_take_an_empty_batch():
    x, mask = torch.randn(0, L, D), torch.zeros(0, L, dtype=torch.bool)
    assert GRUEncoder(D, H)(x, mask).shape == (0, L, H)
    assert AUGRU(D, H)(x, torch.rand(0, L), mask).shape == (0, H)


def test_recurrent_blocks_under_bf16_autocast_keep_a_float32_state():
    # the step loops' linears run in bf16 under CPU autocast; the state stays float32 (type
    # promotion), so 50-step recurrences do not accumulate in bf16
    encoder, augru = GRUEncoder(D, H), AUGRU(H, H)
    x = torch.randn(B, L, D, requires_grad=True)
    attention = torch.rand(B, L)
    expected = augru(encoder(x, MASK), attention, MASK)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        states = encoder(x, MASK)
        got = augru(states, attention, MASK)
    assert states.dtype == got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=0.05, rtol=0.05)
    got.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[MASK].abs().sum() > 0


def test_packed_steps_layout():
    mask = torch.tensor([[True, False, False], [True, True, True], [False, False, False], [True, False, True]])
    steps = PackedSteps(mask)
    assert steps.order.tolist() == [1, 3, 0, 2]  # longest first; row 3 runs to its last real position
    assert steps.batch_sizes == [4, 2, 2]  # the empty row runs one step
    x = torch.arange(12.0).view(4, 3, 1)
    assert steps.pack(x).squeeze(1).tolist() == [3, 9, 0, 6, 4, 10, 5, 11]
    padded = steps.pad(steps.pack(x))
    assert padded.squeeze(-1).tolist() == [[0, 0, 0], [3, 4, 5], [6, 0, 0], [9, 10, 11]]
    assert steps.unsort(torch.tensor([[1.0], [3.0], [0.0], [2.0]])).squeeze(1).tolist() == [0, 1, 2, 3]


def test_gru_encoder_matches_a_plain_gru_at_real_positions():
    encoder = GRUEncoder(D, H).eval()
    x = torch.randn(B, L, D)
    plain, _ = encoder.gru(x)
    torch.testing.assert_close(encoder(x, MASK)[MASK], plain[MASK])


def test_last_position_gathers_each_rows_last_real_output():
    outputs = torch.randn(B, L, D)
    last = last_position(outputs, MASK)
    torch.testing.assert_close(last[0], outputs[0, 5])
    torch.testing.assert_close(last[1], outputs[1, 2])
    torch.testing.assert_close(last[2], outputs[2, 0])
    assert (last[3] == 0).all()
    gappy = torch.tensor([[True, False, True, False, False, False]] * B)
    torch.testing.assert_close(last_position(outputs, gappy), outputs[:, 2])


def _augru_reference(augru, x, attention, mask):
    """One row at a time, one step at a time, the paper's equations with nn.GRUCell's layout."""
    states = []
    for b in range(x.shape[0]):
        h = torch.zeros(augru.hidden_dim)
        for t in range(int(mask[b].sum())):
            gi = augru.input_gates(x[b, t]).chunk(3)
            gh = augru.hidden_gates(h).chunk(3)
            u = torch.sigmoid(gi[0] + gh[0])
            r = torch.sigmoid(gi[1] + gh[1])
            n = torch.tanh(gi[2] + r * gh[2])
            u = attention[b, t] * u
            h = (1 - u) * h + u * n
        states.append(h)
    return torch.stack(states)


def test_augru_follows_the_papers_equations():
    augru = AUGRU(D, H)
    x, attention = torch.randn(B, L, D), torch.rand(B, L)
    torch.testing.assert_close(augru(x, attention, MASK), _augru_reference(augru, x, attention, MASK))


def test_augru_attention_one_is_a_gru_and_zero_keeps_the_state():
    augru = AUGRU(D, H)
    gru = torch.nn.GRU(D, H, batch_first=True)
    # nn.GRU's gates are (r, z, n) with h' = (1 - z) n + z h: the paper's update gate u = 1 - z
    with torch.no_grad():
        w_u, w_r, w_n = augru.input_gates.weight.chunk(3)
        b_u, b_r, b_n = augru.input_gates.bias.chunk(3)
        u_u, u_r, u_n = augru.hidden_gates.weight.chunk(3)
        c_u, c_r, c_n = augru.hidden_gates.bias.chunk(3)
        gru.weight_ih_l0.copy_(torch.cat([w_r, -w_u, w_n]))
        gru.bias_ih_l0.copy_(torch.cat([b_r, -b_u, b_n]))
        gru.weight_hh_l0.copy_(torch.cat([u_r, -u_u, u_n]))
        gru.bias_hh_l0.copy_(torch.cat([c_r, -c_u, c_n]))
    x = torch.randn(B, L, D)
    ones = torch.ones(B, L)
    plain = last_position(gru(x)[0], MASK)
    torch.testing.assert_close(augru(x, ones, MASK), plain)
    assert (augru(x, torch.zeros(B, L), MASK) == 0).all()  # never updated from the zero state
    # attention 0 at the last step: the state after it equals the state before it
    attention = torch.rand(B, L)
    attention[0, 5] = 0.0
    torch.testing.assert_close(augru(x, attention, MASK)[0], augru(x[:, :5], attention[:, :5], MASK[:, :5])[0])


def test_augru_padding_and_empty_rows():
    augru = AUGRU(D, H)
    x, attention = torch.randn(B, L, D), torch.rand(B, L)
    changed_attention = torch.where(MASK, attention, torch.rand(B, L))
    torch.testing.assert_close(
        augru(x, attention, MASK), augru(_with_padding_changed(x), changed_attention, MASK)
    )
    assert (augru(x, attention, MASK)[3] == 0).all()


def test_augru_gradients_reach_parameters_inputs_and_attention():
    augru = AUGRU(D, H)
    x = torch.randn(B, L, D, requires_grad=True)
    attention = torch.rand(B, L, requires_grad=True)
    augru(x, attention, MASK).sum().backward()
    for name, parameter in augru.named_parameters():
        assert parameter.grad.abs().sum() > 0, name
    assert attention.grad[MASK].abs().sum() > 0 and (attention.grad[~MASK] == 0).all()
    assert (x.grad[~MASK] == 0).all()


def test_augru_packed_rows_give_the_all_steps_states_and_gradients():
    # the packed loop (training, eager) runs each row to its last real position only; the padded
    # loop (export, tracing) runs every row over L: same outputs and gradients, whatever the mask
    augru = AUGRU(D, H)
    mask = MASK.clone()
    mask[0, 2] = False  # a gap inside a row: its step has score 0, the state is kept
    x = torch.randn(B, L, D, requires_grad=True)
    attention = torch.rand(B, L, requires_grad=True)
    scores = (attention * mask).unsqueeze(-1)
    packed, padded = augru(x, attention, mask), augru._padded(x, scores)
    torch.testing.assert_close(packed, padded)
    inputs = [x, attention, *augru.parameters()]
    for got, expected in zip(torch.autograd.grad(packed.square().sum(), inputs), torch.autograd.grad(padded.square().sum(), inputs)):
        torch.testing.assert_close(got, expected)
    assert (packed[3] == 0).all()  # the empty row


class _Stack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = CausalSelfAttentionEncoder(D, num_heads=2, max_len=L)
        self.gru = GRUEncoder(D, H)
        self.augru = AUGRU(H, H)

    def forward(self, x, mask):
        states = self.gru(self.attention(x, mask), mask)  # (B, L, H)
        return self.augru(states, torch.sigmoid(states.sum(-1)), mask), last_position(states, mask)


def test_blocks_export_to_onnx_equal_to_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _Stack().eval()
    path = tmp_path / "stack.onnx"
    axes = {"x": {0: "B"}, "mask": {0: "B"}}
    torch.onnx.export(model, (torch.randn(B, L, D), MASK), str(path), input_names=["x", "mask"], dynamic_axes=axes, dynamo=False)
    session = ort.InferenceSession(str(path))
    x = torch.randn(7, L, D)  # another batch size than the traced one
    mask = torch.arange(L) < torch.tensor([6, 3, 1, 0, 2, 5, 4]).unsqueeze(1)
    exported = session.run(None, {"x": x.numpy(), "mask": mask.numpy()})
    with torch.no_grad():
        for got, expected in zip(exported, model(x, mask)):
            torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-5, rtol=1e-4)


def test_positions_start_at_the_scale_of_the_item_tables():
    # recstack's tables start at std 0.01; unit-scale positions would drown the items at first
    encoder = CausalSelfAttentionEncoder(64, max_len=50)
    assert 0.01 < encoder.positions.weight.std().item() < 0.04
