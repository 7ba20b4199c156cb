"""The RetrievalModel contract: checked at registration, met by every registered retrieval model,
read by the tasks through ``retrieval_pairs`` (two-tower losses bit-identical to before), and a
ranking model refused with a message saying so."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from recstack.errors import ConfigError
from recstack.models import build_model, model_class, model_names
from recstack.models.params import ModelParams
from recstack.models import registry
from recstack.models.registry import register_model
from recstack.models.retrieval_contract import (
    RETRIEVAL_MEMBERS,
    RetrievalDefaults,
    RetrievalModel,
    RetrievalPairs,
    is_retrieval_model,
    require_retrieval_model,
)
from recstack.tasks.retrieval import InBatchSoftmaxTask, NegativeSamplingTask, PointwiseTask

from .helpers import NUM_ITEM_ROWS, make_batch, rich_feature_map
from .sequence_helpers import ROWS, sequence_batch, sequence_feature_map

# Small params of each registered retrieval model, with the feature map, a batch maker and the item
# table's rows it is built on. A new retrieval model adds itself here (the test below fails until it does).
RICH = (rich_feature_map, make_batch, NUM_ITEM_ROWS)
SEQUENCES = (sequence_feature_map, sequence_batch, ROWS)
RETRIEVAL_PARAMS: dict[str, tuple[dict, tuple]] = {
    "dssm": ({"hidden_dims": [16, 8]}, RICH),
    "youtube_dnn": ({"hidden_dims": [16, 8]}, RICH),
    "sasrec": ({"num_layers": 1}, SEQUENCES),
    "gru4rec": ({}, SEQUENCES),
    "comirec_sa": ({"num_interests": 3}, SEQUENCES),
    "comirec_dr": ({"num_interests": 3}, SEQUENCES),
    "mind": ({"num_interests": 3}, SEQUENCES),
}


def retrieval_model_names() -> list[str]:
    return [n for n in model_names() if getattr(model_class(n), "kind", None) == "retrieval"]


def test_every_registered_retrieval_model_is_listed_here() -> None:
    assert set(retrieval_model_names()) <= set(RETRIEVAL_PARAMS), "add the new model's params to RETRIEVAL_PARAMS"
    assert {"dssm", "youtube_dnn", "sasrec", "gru4rec"} <= set(retrieval_model_names())


@pytest.mark.parametrize("name", sorted(RETRIEVAL_PARAMS))
def test_every_retrieval_model_satisfies_the_protocol(name: str) -> None:
    if name not in model_names():
        pytest.skip(f"{name} is not registered in this checkout")
    params, (make_feature_map, make_batch, num_rows) = RETRIEVAL_PARAMS[name]
    feature_map = make_feature_map()
    model = build_model(name, feature_map, params).eval()
    assert isinstance(model, RetrievalModel) and is_retrieval_model(model)
    batch = make_batch(6)
    users = model.encode_user(batch)
    K = model.num_interests
    assert users.shape[:-1] == ((6,) if K == 1 else (6, K))
    D = users.shape[-1]
    assert model.encode_item(batch).shape == (6, D)
    rows = torch.arange(2, num_rows)
    if set(model.item_feature_names) != {model.item_id_feature}:
        catalogue = make_batch(len(rows))
        catalogue.ids[model.item_id_feature] = rows
        model.set_item_catalogue(catalogue)
    assert model.encode_item_rows(rows).shape == (len(rows), D)
    assert model.num_item_rows == num_rows
    assert model.item_id_feature in feature_map.schema.names
    assert set(model.user_feature_names) <= set(feature_map.schema.names)
    assert set(model.item_feature_names) <= set(feature_map.schema.names)
    for tower, names in ((model.user_tower(), model.user_feature_names), (model.item_tower(), model.item_feature_names)):
        inputs = tower.inputs_from_batch(batch)  # exportable: plain tensors in input_names order
        assert list(inputs) == list(tower.input_names)
        assert set(tower.input_names) <= {n for f in names for n in (f, f + "__weights")}
    pairs = model.retrieval_pairs(batch)
    assert isinstance(pairs, RetrievalPairs) and pairs.queries.dim() == 2 and pairs.queries.shape[1] == D
    assert model.positive_feature in feature_map.schema.names
    # the user tower alone computes what the model computes
    assert torch.allclose(model.user_tower()(*model.user_tower().inputs_from_batch(batch).values()), users, atol=1e-6)


def _bare(kind: str = "retrieval") -> type:
    class Bare(nn.Module):
        @dataclass(frozen=True, kw_only=True)
        class Params(ModelParams):
            pass

    Bare.kind = kind
    return Bare


def test_registration_names_the_missing_member() -> None:
    with pytest.raises(TypeError, match=r"lacks 'num_interests'"):
        register_model("contract_test_bare")(_bare())

    class NoPairs(RetrievalDefaults, nn.Module):
        @dataclass(frozen=True, kw_only=True)
        class Params(ModelParams):
            pass

        def encode_user(self, batch):
            ...

        def encode_item(self, batch):
            ...

        def encode_item_rows(self, rows):
            ...

        def user_tower(self):
            ...

    with pytest.raises(TypeError, match=r"NoPairs declares kind = 'retrieval' but lacks 'item_tower'"):
        register_model("contract_test_no_item_tower")(NoPairs)
    assert "contract_test_bare" not in model_names() and "contract_test_no_item_tower" not in model_names()
    register_model("contract_test_ranking")(_bare(kind="ranking"))  # not retrieval: no check
    registry._MODELS.pop("contract_test_ranking")
    assert len(RETRIEVAL_MEMBERS) == len(set(RETRIEVAL_MEMBERS))


# Losses and predictions of the two-tower models on a fixed batch, computed with the code before
# the contract (commit 55128f1: the tasks read model(batch) directly): float.hex of (loss, sum of
# predict). The contract must leave them equal: bit-identical on the machine that wrote them; other
# CPUs' float32 GEMM kernels round differently in the last bits, so they are compared to a few ulps.
GOLDEN = {
    "dssm/ibs": ("0x1.5002080000000p+2", "0x1.1a1a520000000p+4"),
    "dssm/ibs_plain": ("0x1.28ed1a0000000p+2", "0x1.1a1a520000000p+4"),
    "dssm/pw": ("0x1.ba74540000000p+0", "0x1.3a61080000000p+3"),
    "dssm/ns": ("0x1.c115700000000p+1", "0x1.1a1a520000000p+5"),
    "dssm/nsp": ("0x1.bf9bbc0000000p+1", "0x1.1a1a520000000p+5"),
    "youtube_dnn/ibs": ("0x1.d8ccd40000000p+1", "0x1.d9f0200000000p+1"),
    "youtube_dnn/ibs_plain": ("0x1.a475240000000p+1", "0x1.d9f0200000000p+1"),
    "youtube_dnn/pw": ("0x1.6bc5ea0000000p-1", "0x1.1655b60000000p+3"),
    "youtube_dnn/ns": ("0x1.e78bc40000000p+1", "0x1.d9f0200000000p+2"),
    "youtube_dnn/nsp": ("0x1.ebfa400000000p+1", "0x1.d9f0200000000p+2"),
    "youtube_dnnTrue/ibs": ("0x1.63e79e0000000p+2", "0x1.524c420000000p+3"),
    "youtube_dnnTrue/ibs_plain": ("0x1.358bec0000000p+2", "0x1.524c420000000p+3"),
    "youtube_dnnTrue/pw": ("0x1.fd81f40000000p-1", "0x1.1bc8980000000p+3"),
    "youtube_dnnTrue/ns": ("0x1.a9a1440000000p+2", "0x1.524c420000000p+4"),
    "youtube_dnnTrue/nsp": ("0x1.9b5c3c0000000p+2", "0x1.524c420000000p+4"),
}


def test_two_tower_task_outputs_are_identical_to_before(feature_map) -> None:
    results = {}
    for name, params in [("dssm", {"hidden_dims": [16, 8]}), ("youtube_dnn", {"hidden_dims": [16, 8]}),
                         ("youtube_dnn", {"hidden_dims": [16, 8], "normalize": True})]:  # fmt: skip
        torch.manual_seed(0)
        model = build_model(name, feature_map, params).eval()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        batch = make_batch(16)
        batch.label = (torch.arange(16) % 3 != 0).float()
        counts = torch.arange(30) + 1
        tasks = {
            "ibs": InBatchSoftmaxTask(temperature=0.1).set_item_frequencies(counts),
            "ibs_plain": InBatchSoftmaxTask(temperature=0.1, logq_correction=False, remove_accidental_hits=False),
            "pw": PointwiseTask(gamma=10.0, pos_weight=1.2),
            "ns": NegativeSamplingTask(num_negatives=5, seed=3),
            "nsp": NegativeSamplingTask(num_negatives=5, seed=3, distribution="popularity").set_item_frequencies(counts),
        }
        for task_name, task in tasks.items():
            if name == "dssm" and task_name.startswith("ns"):
                catalogue = make_batch(28)
                catalogue.ids["item_id"] = torch.arange(2, 30)
                model.set_item_catalogue(catalogue)
            loss, predicted = task.loss(model, batch), task.predict(model, batch)
            results[f"{name}{params.get('normalize', '')}/{task_name}"] = (loss.item(), predicted.sum().item())
    assert results.keys() == GOLDEN.keys()
    for key, (loss, predicted) in results.items():
        golden_loss, golden_predicted = (float.fromhex(value) for value in GOLDEN[key])
        assert loss == pytest.approx(golden_loss, rel=1e-6, abs=0), key  # ~8 float32 ulps
        assert predicted == pytest.approx(golden_predicted, rel=1e-6, abs=0), key


def test_a_ranking_model_is_refused_with_a_message(feature_map) -> None:
    ranking = build_model("lr", feature_map, {})
    assert not is_retrieval_model(ranking)
    with pytest.raises(ConfigError, match=r"run/folder: needs a retrieval run .* got a ranking model LR"):
        require_retrieval_model(ranking, where="run/folder")
    batch = make_batch(4)
    with pytest.raises(ConfigError, match="a retrieval task needs a retrieval model .* is this a ranking model"):
        InBatchSoftmaxTask(logq_correction=False).loss(ranking, batch)
    with pytest.raises(ValueError, match="NegativeSamplingTask needs a model with num_item_rows"):
        NegativeSamplingTask().loss(ranking, batch)


def test_pairs_carry_sequence_positions(feature_map) -> None:
    """A model giving N pairs with item rows only (as a sequence model does): the tasks encode
    the rows through encode_item_rows and weight by the pairs' labels."""
    base = build_model("youtube_dnn", feature_map, {"hidden_dims": [16, 8], "normalize": True}).eval()

    class Positions(type(base)):
        def retrieval_pairs(self, batch):
            queries = self.encode_user(batch).repeat_interleave(2, dim=0)  # (2B, D): two "positions" per row
            rows = batch.ids["item_id"].repeat_interleave(2)
            return RetrievalPairs(queries=queries, positive_rows=rows, positive_vectors=None, labels=None)

    base.__class__ = Positions
    batch = make_batch(5)
    task = InBatchSoftmaxTask(temperature=0.5, logq_correction=False)
    logits, targets = task.logits_and_targets(base, batch)
    assert logits.shape == (10, 10) and targets.tolist() == list(range(10))
    assert (logits[0, 1] < -1e30).item()  # the same item twice: an accidental hit, masked
    assert NegativeSamplingTask(num_negatives=3, seed=0).loss(base, batch).isfinite()
    assert task.predict(base, batch).shape == (10,)


def test_export_and_serving_refuse_a_ranking_run(feature_map) -> None:
    from recstack.export.retrieval_run import retrieval_model
    from recstack.export.run_folder import LoadedRun
    from recstack.serving.user_encoder import UserEncoder

    ranking = build_model("lr", feature_map, {})
    run = LoadedRun(paths=None, config={}, preprocessor=None, feature_map=feature_map, model=ranking, model_spec={"name": "lr"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"the run \(model 'lr'\): needs a retrieval run"):
        retrieval_model(run)
    with pytest.raises(ConfigError, match=r"the user encoder: needs a retrieval run"):
        UserEncoder(ranking, example=make_batch(2))
