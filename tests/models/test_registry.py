"""build_model: names to classes, config params parsed into frozen dataclasses, keyed errors."""

from __future__ import annotations

import dataclasses

import pytest
from torch import nn

from recstack.errors import ConfigError
from recstack.models import DIN, DCNv2, DeepFM, ModelParams, Structure, build_model, model_class, register_model
from recstack.models.behaviours import Behaviour
from recstack.nn.mlp import Activation

from .helpers import fit, full_records, full_schema, model_params, write_pretrained


@pytest.fixture(scope="module")
def feature_map(tmp_path_factory):
    path, _ = write_pretrained(tmp_path_factory.mktemp("vectors"))
    return fit(full_schema(path), full_records(32)).feature_map()


def test_config_values_become_typed_params(feature_map):
    model = build_model("dcn_v2", feature_map, {"low_rank": 4, "num_experts": 2, "structure": "stacked", "hidden_dims": [8, 4]})
    assert isinstance(model, DCNv2)
    assert model.params == DCNv2.Params(low_rank=4, num_experts=2, structure=Structure.STACKED, hidden_dims=(8, 4))
    assert model.params.hidden_dims == (8, 4) and model.params.expert_activation is Activation.RELU
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.params.low_rank = 8


def test_params_round_trip_through_plain_values(feature_map):
    params = DIN.Params.from_dict(model_params("din", attention_activation="prelu"))
    assert params.behaviours[1] == Behaviour(candidate="genre", history="hist_genres")
    plain = params.to_dict()
    assert plain["attention_activation"] == "prelu" and plain["behaviours"][0]["candidate"] == "item_id"
    assert DIN.Params.from_dict(plain) == params


def test_a_params_instance_is_accepted(feature_map):
    model = build_model("deepfm", feature_map, DeepFM.Params(hidden_dims=(4,)))
    assert model.params.hidden_dims == (4,)
    with pytest.raises(ConfigError, match="model.params: model 'fm' takes FM.Params"):
        build_model("fm", feature_map, DeepFM.Params())


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("deepfm", {"hiden_dims": [8]}, r"model\.params\.hiden_dims: unknown parameter \(did you mean 'hidden_dims'\?\)"),
        ("deepfm", {"hidden_dims": [8, "x"]}, r"model\.params\.hidden_dims\[1\]: expected an integer, got 'x'"),
        ("deepfm", {"hidden_dims": 8}, r"model\.params\.hidden_dims: expected a list"),
        ("deepfm", {"hidden_dims": []}, r"model\.params\.hidden_dims: needs at least one layer width"),
        ("deepfm", {"dropout": 1.5}, r"model\.params\.dropout: must be in \[0, 1\)"),
        ("deepfm", {"activation": "swish"}, r"model\.params\.activation: expected one of \['relu'"),
        ("dcn", {"num_cross_layers": 0}, r"model\.params\.num_cross_layers: must be >= 1"),
        ("dcn_v2", {"structure": "diagonal"}, r"model\.params\.structure: expected one of \['stacked', 'parallel'\]"),
        ("dcn_v2", {"num_experts": 4}, r"model\.params\.num_experts: a mixture of experts needs low_rank"),
        ("lr", {"features": ["item_id", "nope"]}, r"model\.params\.features: unknown feature\(s\) \['nope'\]"),
        ("lr", {"sparse_embeddings": "yes"}, r"model\.params\.sparse_embeddings: expected true or false"),
        ("fm", {"features": ["item_id"]}, r"model\.params\.features: FM needs two embedded fields"),
        ("wide_deep", {"cross_features": [["genre", "hist_genres"]]}, r"model\.params\.cross_features\[0\]: 'hist_genres' is sequence"),
        ("wide_deep", {"cross_features": [["genre"]]}, r"model\.params\.cross_features\[0\]: a cross needs two features"),
        ("din", {}, r"model\.params\.behaviours: DIN needs at least one"),
        ("din", {"behaviours": [{"candidate": "item_id"}]}, r"model\.params\.behaviours\[0\]\.history: required"),
        ("din", {"behaviours": [{"candidate": "item_id", "history": "x"}]}, r"model\.params\.behaviours\[0\]\.history: unknown feature 'x'"),
        ("din", {"behaviours": [{"candidate": "hist_genres", "history": "hist_genres"}]}, r"behaviours\[0\]\.candidate: 'hist_genres' is sequence"),
        ("din", {"behaviours": [{"candidate": "item_id", "history": "item_id"}]}, r"behaviours\[0\]\.history: 'item_id' is categorical"),
        ("din", {"behaviours": [{"candidate": "item_id", "history": "hist_item_ids", "grup": "a"}]}, r"model\.params\.behaviours\[0\]\.grup: unknown parameter"),
    ],
)
def test_bad_params_name_their_key(feature_map, name, params, message):
    with pytest.raises(ConfigError, match=message):
        build_model(name, feature_map, params)


def test_din_rejects_a_candidate_and_history_on_different_tables(feature_map):
    params = {"behaviours": [{"candidate": "item_id", "history": "hist_genres"}]}
    with pytest.raises(ConfigError, match=r"model\.params\.behaviours\[0\]: candidate 'item_id' uses table 'item' but "
                       r"history 'hist_genres' uses table 'genre'; a candidate and its history must share one table"):
        build_model("din", feature_map, params)


def test_fm_style_models_need_one_embedding_dim(tmp_path):
    path, _ = write_pretrained(tmp_path)
    schema_dict = full_schema(path).to_dict()
    schema_dict["tables"]["genre"]["dim"] = 4
    from recstack.schema import Schema

    feature_map = fit(Schema.from_dict(schema_dict), full_records(32)).feature_map()
    for name in ("fm", "deepfm"):
        with pytest.raises(ConfigError, match=r"model\.params\.features: embedded fields need one embedding dim.*'genre': 4"):
            build_model(name, feature_map, {})
    build_model("dcn", feature_map, {})  # concatenating models take any dims


def test_unknown_model_is_a_config_error(feature_map):
    with pytest.raises(ConfigError, match=r"model\.name: unknown model 'deep_fm' \(did you mean 'deepfm'\?\); known: (\w+, )*deepfm, "):
        build_model("deep_fm", feature_map, {})
    assert model_class("din") is DIN


def test_registration_needs_a_params_dataclass():
    with pytest.raises(TypeError, match="Params must subclass ModelParams"):

        @register_model("no_params")
        class NoParams(nn.Module):
            pass

    with pytest.raises(ValueError, match="'lr' is already taken"):

        @register_model("lr")
        class Other(nn.Module):
            @dataclasses.dataclass(frozen=True, kw_only=True)
            class Params(ModelParams):
                pass
