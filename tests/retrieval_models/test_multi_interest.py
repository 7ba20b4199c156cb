"""Multi-interest recall (ComiRec-SA, ComiRec-DR, MIND): the extractors against the papers'
equations (masks, routing rounds, coupling), label-aware attention, the models under the
retrieval contract (K vectors per user, label-aware training pairs, gradients, save -> load,
ONNX), the merge of K result lists, and a planted two-interest signal one vector cannot fit."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recstack.data.batch import Batch
from recstack.errors import ConfigError
from recstack.evaluation.multi_interest import PAD_KEY, max_interest_scores, merge_by_max
from recstack.evaluation.retrieval_metrics import evaluate_ranked_scores
from recstack.models import build_model
from recstack.models.retrieval_contract import RetrievalModel
from recstack.nn.interests import (
    CapsuleRouting,
    SelfAttentiveInterests,
    dynamic_interest_count,
    label_aware_attention,
    prefix_mask,
    squash,
)
from recstack.tasks import FullSoftmaxTask

from .sequence_helpers import L, ROWS, sequence_batch, sequence_feature_map

K = 3
MODELS = {"comirec_sa": {}, "comirec_dr": {}, "mind": {"readout": "soft", "attention_pow": 2}}


def _model(name: str, **params) -> nn.Module:
    return build_model(name, sequence_feature_map(), {"num_interests": K, **MODELS[name], **params})


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, L, 8, generator=g)
    mask = torch.tensor([[True] * 4 + [False] * 2, [False] * L, [True] * L, [True] + [False] * 5])
    return x, mask


EXTRACTORS = {
    "self_attentive": lambda: SelfAttentiveInterests(8, num_interests=K, max_len=L),
    "mind_routing": lambda: CapsuleRouting(8, num_interests=K, max_len=L, dynamic_interests=True),
    "dr_routing": lambda: CapsuleRouting(8, num_interests=K, max_len=L, bilinear="per_position", init="zeros", detach_routing=True),
}


# ---- extractors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", EXTRACTORS)
def test_padding_never_attended_or_routed(name: str) -> None:
    extractor = EXTRACTORS[name]()
    x, mask = _inputs()
    changed = x.clone()
    changed[~mask] = 100.0  # whatever the padded positions hold
    assert torch.equal(extractor(x, mask), extractor(changed, mask))
    assert torch.equal(extractor.prefixes(x, mask)[mask], extractor.prefixes(changed, mask)[mask])
    assert torch.equal(extractor(x, mask)[1], torch.zeros(K, 8))  # no real position: zeros, no NaN
    assert not torch.isnan(extractor.prefixes(x, mask)).any()


@pytest.mark.parametrize("name", EXTRACTORS)
def test_prefix_t_is_the_sequence_cut_after_t(name: str) -> None:
    extractor = EXTRACTORS[name]()
    x, mask = _inputs(1)
    prefixes = extractor.prefixes(x, mask)  # (B, L, K, D)
    for t in range(L):
        cut = mask.clone()
        cut[:, t + 1 :] = False
        rows = mask[:, t]
        assert torch.allclose(prefixes[rows, t], extractor(x, cut)[rows], atol=1e-6)


def test_self_attention_is_k_heads_of_softmax_w2_tanh_w1_h() -> None:
    extractor = SelfAttentiveInterests(8, num_interests=K, max_len=L)
    x, mask = _inputs()
    weights = extractor.attention(x, mask.unsqueeze(1)).squeeze(1)  # (B, K, L)
    assert weights.shape == (4, K, L)
    assert torch.equal(weights[~mask.unsqueeze(1).expand_as(weights)], torch.zeros(int((~mask).sum()) * K))
    assert torch.allclose(weights.sum(-1)[mask.any(1)], torch.ones(3, K))
    keys = x[0, :4] + extractor.positions[:4]  # (4, D) the first row's real positions
    by_hand = torch.softmax(extractor.w2.weight @ torch.tanh(extractor.w1.weight @ keys.T + extractor.w1.bias[:, None]), dim=-1)
    assert torch.allclose(weights[0, :, :4], by_hand, atol=1e-6)
    assert torch.allclose(extractor(x, mask)[0], by_hand @ x[0, :4], atol=1e-6)  # V_u = A H (no positions)


def _reference_routing(routing: CapsuleRouting, x: torch.Tensor, iterations: int) -> torch.Tensor:
    """MIND Algorithm 1 for one user's real behaviours ``x`` (n, D), written out round by round."""
    n = x.shape[0]
    k = int(dynamic_interest_count(torch.tensor(n), routing.num_interests)) if routing.dynamic_interests else routing.num_interests
    b = routing.initial_logits[:k, :n].clone()  # (K', n)
    mapped = routing.S(x)  # (n, D) S e_i, one S for every behaviour and interest
    for r in range(iterations):
        w = torch.softmax(b, dim=0)  # over interests, per behaviour
        u = torch.stack([squash(sum(w[j, i] * mapped[i] for i in range(n))) for j in range(k)])  # (K', D)
        if r < iterations - 1:
            b = b + torch.stack([torch.stack([u[j] @ mapped[i] for i in range(n)]) for j in range(k)])
    return u


@pytest.mark.parametrize("iterations", [1, 3, 5])
def test_routing_runs_the_configured_rounds_of_the_paper(iterations: int) -> None:
    routing = CapsuleRouting(8, num_interests=K, max_len=L, iterations=iterations, dynamic_interests=True)
    x, mask = _inputs()
    out = routing(x, mask)  # (B, K, D)
    for row in (0, 2, 3):
        expected = _reference_routing(routing, x[row, mask[row]], iterations)  # (K', D)
        assert torch.allclose(out[row, : len(expected)], expected, atol=1e-5)
        assert torch.equal(out[row, len(expected) :], out[row, :1].expand(K - len(expected), -1))  # unused: interest 0
    others = [CapsuleRouting(8, num_interests=K, max_len=L, iterations=r) for r in (1, 2)]
    for other in others:
        other.load_state_dict(routing.state_dict())
    assert not torch.allclose(others[0](x, mask), others[1](x, mask))  # the rounds change the capsules


def test_coupling_sums_to_one_over_interests_for_each_real_behaviour() -> None:
    x, mask = _inputs()
    for routing in (CapsuleRouting(8, num_interests=K, max_len=L), EXTRACTORS["dr_routing"](), EXTRACTORS["mind_routing"]()):
        _, coupling, in_use = routing.route(x, prefix_mask(mask))  # (B, L, K, L)
        allowed = prefix_mask(mask).unsqueeze(2).expand_as(coupling)
        totals = coupling.sum(dim=2)  # (B, L, L) over interests
        assert torch.allclose(totals[prefix_mask(mask)], torch.ones(int(prefix_mask(mask).sum())))
        assert torch.equal(coupling[~allowed], torch.zeros(int((~allowed).sum())))  # padding, later items
        assert torch.equal(coupling[~in_use.unsqueeze(-1).expand_as(coupling)], torch.zeros(int((~in_use).sum()) * L))


def test_routing_logits_are_a_fixed_buffer_and_the_map_is_shared() -> None:
    mind = CapsuleRouting(8, num_interests=K, max_len=L)
    assert "initial_logits" in mind.state_dict() and all("logits" not in n for n, _ in mind.named_parameters())
    assert [n for n, _ in mind.named_parameters()] == ["S.weight"] and mind.S.weight.shape == (8, 8)
    assert mind.initial_logits.std() > 0.5  # N(0, 1) draws
    x, mask = _inputs()
    assert torch.equal(mind(x, mask), mind(x, mask))  # deterministic: the draw is made once
    dr = EXTRACTORS["dr_routing"]()
    assert torch.equal(dr.initial_logits, torch.zeros(K, L)) and dr.W.shape == (L, K, 8, 8)


def test_dynamic_interest_count_is_log2_of_the_history() -> None:
    lengths = torch.tensor([0, 1, 2, 3, 4, 7, 8, 15, 16, 1000])
    assert dynamic_interest_count(lengths, 4).tolist() == [1, 1, 1, 1, 2, 2, 3, 3, 4, 4]
    expected = [max(1, min(4, math.floor(math.log2(n)))) if n else 1 for n in lengths.tolist()]
    assert dynamic_interest_count(lengths, 4).tolist() == expected


def test_label_aware_attention_hard_soft_and_masked() -> None:
    interests = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]])  # (1, K=3, D=2)
    target = torch.tensor([[1.0, 1.0]])
    assert torch.equal(label_aware_attention(interests, target), interests[0, 1:2])  # argmax of (1, 2, -3)
    scores = torch.tensor([1.0, 2.0, -3.0])
    soft = torch.softmax(scores.pow(2), 0) @ interests[0]  # the paper's softmax(pow(V^T e, p))
    assert torch.allclose(label_aware_attention(interests, target, power=2), soft.unsqueeze(0))
    in_use = torch.tensor([[True, False, True]])
    assert torch.equal(label_aware_attention(interests, target, in_use=in_use), interests[0, :1])
    assert torch.allclose(label_aware_attention(interests, target, power=2, in_use=in_use),
                          (torch.softmax(torch.tensor([1.0, 9.0]), 0) @ interests[0, [0, 2]]).unsqueeze(0))  # fmt: skip


# ---- the models ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_k_vectors_per_user_and_a_label_aware_pair_per_position(name: str) -> None:
    model = _model(name).eval()
    assert isinstance(model, RetrievalModel) and model.num_interests == K
    batch = sequence_batch()
    history, targets = batch.sequences["hist_item_ids"], batch.sequences["target_item_ids"]
    users = model.encode_user(batch)
    assert users.shape == (5, K, 16) and torch.equal(users[0], torch.zeros(K, 16))  # empty history
    pairs = model.retrieval_pairs(batch)
    real = history != 0
    assert pairs.queries.shape == (int(real.sum()), 16) and torch.equal(pairs.positive_rows, targets[real])
    assert torch.equal(pairs.positive_vectors, model.encode_item_rows(targets[real]))
    interests, _ = model.user_tower().every_prefix(history)  # (B, L, K, D)
    last = real.sum(1) - 1
    full = interests[torch.arange(5), last.clamp(min=0)]  # the last prefix = the whole history
    assert torch.allclose(full[1:], users[1:], atol=1e-6)
    if model.params.readout.value == "hard":  # training picks the interest nearest the target
        scores = torch.einsum("nkd,nd->nk", interests[real], pairs.positive_vectors)
        assert torch.equal(pairs.queries, interests[real][torch.arange(len(scores)), scores.argmax(1)])
    assert model.user_feature_names == ("hist_item_ids",) and model.positive_feature == "target_item_ids"


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name: str) -> None:
    model = _model(name).train()
    FullSoftmaxTask().loss(model, sequence_batch(8, seed=2)).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert missing == []


@pytest.mark.parametrize("name", MODELS)
def test_save_load_gives_identical_outputs(name: str) -> None:
    model = _model(name).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # another init, another routing-logit draw
    loaded = _model(name).eval()
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    batch = sequence_batch()
    assert torch.equal(model.encode_user(batch), loaded.encode_user(batch))
    assert torch.equal(model.retrieval_pairs(batch).queries, loaded.retrieval_pairs(batch).queries)


@pytest.mark.parametrize("name", MODELS)
def test_exported_user_tower_gives_k_vectors_equal_to_torch(name: str, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from recstack.export.onnx_towers import export_tower_onnx, onnx_max_abs_error

    model = _model(name).eval()
    tower = model.user_tower()
    path = export_tower_onnx(tower, tower.inputs_from_batch(sequence_batch(8, seed=3)), tmp_path / "user.onnx")
    other = tower.inputs_from_batch(sequence_batch(3, seed=4))
    assert onnx_max_abs_error(tower, path, other) < 1e-5
    import onnxruntime as ort

    (vectors,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {k: v.numpy() for k, v in other.items()})
    assert vectors.shape == (3, K, 16)


def test_config_errors_name_the_parameter() -> None:
    with pytest.raises(ConfigError, match=r"model.params.attention_pow: must be a positive integer"):
        _model("mind", attention_pow=1.5)
    with pytest.raises(ConfigError, match=r"model.params.num_interests: must be >= 1"):
        _model("comirec_sa", num_interests=0)
    with pytest.raises(ConfigError, match=r"model.params.iterations: must be >= 1"):
        _model("mind", iterations=0)
    with pytest.raises(ConfigError, match=r"model.params.history_feature: 'nope' is not a sequence feature"):
        _model("comirec_dr", history_feature="nope")
    with pytest.raises(ConfigError, match=r"model.params.readout"):
        _model("comirec_sa", readout="medium")


# ---- merging K result lists ----------------------------------------------------------------------
def _brute_force_merge(scores: np.ndarray, keys: np.ndarray, n: int) -> list[list[tuple[int, float]]]:
    merged = []
    for user_scores, user_keys in zip(scores.reshape(len(scores), -1), keys.reshape(len(keys), -1)):
        best: dict[int, float] = {}
        for score, key in zip(user_scores.tolist(), user_keys.tolist()):
            if key != PAD_KEY and (key not in best or score > best[key]):
                best[key] = score
        merged.append(sorted(best.items(), key=lambda kv: -kv[1])[:n])
    return merged


def test_merge_by_max_equals_a_brute_force_merge() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, K, 6)).astype(np.float32)  # (B, K, M), continuous: no ties
    keys = rng.integers(0, 10, size=(50, K, 6))  # many duplicates across and within interests
    keys[rng.random(keys.shape) < 0.1] = PAD_KEY
    scores[keys == PAD_KEY] = -np.inf
    for n in (1, 5, 18, 25):
        merged_scores, merged_keys = merge_by_max(scores, keys, n)
        assert merged_scores.shape == merged_keys.shape == (50, n)
        for b, expected in enumerate(_brute_force_merge(scores, keys, n)):
            assert merged_keys[b, : len(expected)].tolist() == [k for k, _ in expected]
            assert np.allclose(merged_scores[b, : len(expected)], [s for _, s in expected])
            assert (merged_keys[b, len(expected) :] == PAD_KEY).all() and np.isneginf(merged_scores[b, len(expected) :]).all()


def test_full_corpus_max_scores_rank_as_the_merged_per_interest_top_n() -> None:
    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(20, K, 8, generator=g), torch.randn(200, 8, generator=g)
    n = 15
    per_interest = users @ items.T  # (U, K, N)
    top_scores, top_keys = per_interest.topk(n, dim=-1)  # each interest's own top n
    merged_scores, merged_keys = merge_by_max(top_scores.numpy(), top_keys.numpy(), n)
    full = max_interest_scores(users, items.T)  # (U, N)
    assert torch.equal(full.topk(n, dim=-1).indices, torch.from_numpy(merged_keys))
    assert torch.allclose(max_interest_scores(users[:, 0], items.T), per_interest[:, 0])  # (U, D): one vector
    targets = torch.randint(0, 200, (20,), generator=g).numpy()
    from recstack.evaluation.retrieval_metrics import evaluate_retrieval

    by_max = evaluate_ranked_scores(lambda r: full[r[0] : r[-1] + 1].clone(), targets, ks=(n,))
    assert evaluate_retrieval(users, items, targets, ks=(n,)) == by_max  # (U, K, D) users: the best interest
    hits = np.mean([t in set(k.tolist()) for t, k in zip(targets, merged_keys)])  # recall@n of the merged lists
    assert by_max[f"recall@{n}"] == pytest.approx(hits)


# ---- learning ------------------------------------------------------------------------------------
CLUSTERS, PER_CLUSTER, USERS, EVENTS, DIM = 30, 4, 1200, 21, 8


def _two_interest_users() -> tuple[torch.Tensor, np.ndarray]:
    """Each user draws every event from one of two random clusters of 4 items (of 30 clusters):
    in 8 dimensions one vector cannot rank an arbitrary pair of clusters above the other 28."""
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.choice(CLUSTERS, 2, replace=False) for _ in range(USERS)])  # (U, 2)
    cluster = np.take_along_axis(pairs, rng.integers(0, 2, (USERS, EVENTS)), axis=1)  # (U, T)
    return torch.as_tensor(2 + cluster * PER_CLUSTER + rng.integers(0, PER_CLUSTER, (USERS, EVENTS))), pairs


def _train_and_recall(name: str, interests: int, sequences: torch.Tensor) -> tuple[float, nn.Module]:
    torch.manual_seed(0)
    feature_map = sequence_feature_map(num_rows=CLUSTERS * PER_CLUSTER + 2, maxlen=EVENTS - 2, dim=DIM)
    model = build_model(name, feature_map, {"num_interests": interests})
    task, optimizer = FullSoftmaxTask(), torch.optim.Adam(model.parameters(), lr=0.01)
    train, test = sequences[:1000], sequences[1000:]
    for _ in range(15):
        for rows in torch.randperm(len(train)).split(100):
            batch = Batch(sequences={"hist_item_ids": train[rows, :-2], "target_item_ids": train[rows, 1:-1]})
            loss = task.loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        users = model.encode_user(Batch(sequences={"hist_item_ids": test[:, 1:-1]}))  # (U, K, D) or (U, D)
        items_t = model.encode_item_rows(torch.arange(feature_map.tables["item"].num_rows)).T
    no_padding_rows = (np.arange(len(test) + 1) * 2, np.tile([0, 1], len(test)))  # rows 0/1 are no items
    metrics = evaluate_ranked_scores(lambda r: max_interest_scores(users[r[0] : r[-1] + 1], items_t), test[:, -1].numpy(), exclude=no_padding_rows, ks=(8,))
    return metrics["recall@8"], model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["comirec_sa", "mind"])
def test_k_interests_learn_two_disjoint_interests_one_vector_cannot(name: str) -> None:
    sequences, pairs = _two_interest_users()
    single, _ = _train_and_recall(name, 1, sequences)
    multi, model = _train_and_recall(name, 4, sequences)
    assert multi > single + 0.15, (multi, single)  # measured: SA 1.00 vs 0.79, MIND 0.81 vs 0.45
    assert multi > 0.65  # chance: 8 / 120
    # not collapsed: a user's interests point at different clusters, both of the user's among them
    with torch.no_grad():
        users = model.encode_user(Batch(sequences={"hist_item_ids": sequences[1000:, 1:-1]}))  # (U, 4, D)
        items = model.encode_item_rows(torch.arange(2, CLUSTERS * PER_CLUSTER + 2))  # (120, D)
    best_cluster = (users @ items.T).argmax(-1) // PER_CLUSTER  # (U, 4) each interest's top item's cluster
    covered = [set(best.tolist()) >= set(pair.tolist()) for best, pair in zip(best_cluster, pairs[1000:])]
    assert np.mean(covered) > 0.8  # measured: SA 1.00, MIND 0.96
    cosine = F.cosine_similarity(users.unsqueeze(1), users.unsqueeze(2), dim=-1)  # (U, 4, 4)
    assert float(cosine.min(dim=-1).values.mean()) < 0.8  # measured: SA -0.02, MIND 0.62 (ReLU vectors: cosines >= 0)


@pytest.mark.parametrize("string_ids", [False, True])
def test_search_interests_is_k_searches_merged_by_max(string_ids: bool) -> None:
    from recstack.retrieval.index import create_index
    from recstack.retrieval.multi_interest import search_interests

    g = torch.Generator().manual_seed(1)
    items, users = torch.randn(60, 8, generator=g).numpy(), torch.randn(7, K, 8, generator=g).numpy()
    ids = np.array([f"i{j}" for j in range(60)], dtype=object) if string_ids else np.arange(100, 160)
    index = create_index("exact", dim=8)
    index.add(ids, items)
    exclude = [ids[[0, 5, 9]], ids[:0], ids[10:50], ids[:0], ids[:0], ids[:58], ids[:0]]  # user 5 keeps 2 items
    scores, found = search_interests(index, users, 10, exclude=exclude)
    assert scores.shape == found.shape == (7, 10)
    full = (users @ items.T).max(axis=1)  # (B, N) brute force: best interest per item
    for b in range(7):
        allowed = ~np.isin(ids, exclude[b])
        order = np.argsort(-np.where(allowed, full[b], -np.inf), kind="stable")[: min(10, int(allowed.sum()))]
        assert found[b, : len(order)].tolist() == ids[order].tolist()
        assert np.allclose(scores[b, : len(order)], full[b, order], atol=1e-5)
    assert found[5, 2:].tolist() == ([None] * 8 if string_ids else [-1] * 8) and np.isneginf(scores[5, 2:]).all()
    single_scores, single_ids = search_interests(index, users[:, 0], 10)  # (B, D): a plain search
    plain_scores, plain_ids = index.search(users[:, 0], 10)
    assert np.array_equal(single_ids, plain_ids) and np.array_equal(single_scores, plain_scores)
