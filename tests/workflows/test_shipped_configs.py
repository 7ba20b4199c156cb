"""Every config in configs/ parses, names an existing schema and a registered model with valid params."""

from pathlib import Path

import pytest

from recstack.config import RunConfig
from recstack.models import model_class, model_names
from recstack.models.params import ParamError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_is_a_config_for_every_ranking_model_on_both_datasets() -> None:
    names = {p.stem for p in CONFIGS}
    for model in ("lr", "fm", "embedding_mlp", "deep_crossing", "wide_deep", "deepfm", "dcn", "dcn_v2", "din"):
        assert f"ml100k_{model}" in names and f"synthetic_{model}" in names, model


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_is_valid(path: Path) -> None:
    config = RunConfig.from_yaml(path)
    assert config.model.name in model_names()
    params_cls = model_class(config.model.name).Params
    try:
        params_cls.from_dict(config.model.params)
    except ParamError as error:  # pragma: no cover - the message names the key
        pytest.fail(f"{path.name}: model.params.{error.key}: {error.problem}")
    for feature_name in _named_features(config.model.params):
        assert feature_name in config.schema.names, f"{path.name}: unknown feature {feature_name!r}"


def _named_features(params: dict) -> list[str]:
    names = []
    for behaviour in params.get("behaviours", []):
        names += [behaviour["candidate"], behaviour["history"]]
    for group in params.get("cross_features", []):
        names += list(group)
    return names
