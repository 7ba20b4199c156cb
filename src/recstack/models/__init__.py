"""Models: ranking (``forward(batch) -> logits (B,)``) and retrieval (two towers).

Importing this package registers every model, so configs can name them::

    from recstack.models import build_model, model_names
    model = build_model("deepfm", feature_map, {"hidden_dims": [200, 200]})
"""

# Importing each model module registers it.
from recstack.models.aitm import AITM
from recstack.models.bst import BST
from recstack.models.dcn import DCN
from recstack.models.dcn_v2 import DCNv2, Structure
from recstack.models.deep_crossing import DeepCrossing
from recstack.models.deepfm import DeepFM
from recstack.models.dien import DIEN
from recstack.models.behaviours import Behaviour
from recstack.models.din import DIN
from recstack.models.embedding_mlp import EmbeddingMLP
from recstack.models.esmm import ESMM
from recstack.models.fm import FM
from recstack.models.lr import LR
from recstack.models.mmoe import MMoE
from recstack.models.params import ModelParams, ParamError
from recstack.models.ple import PLE
from recstack.models.registry import build_model, model_class, model_names, register_model
from recstack.models.shared_bottom import SharedBottom
from recstack.models.wide_deep import WideDeep
from recstack.models.dssm import TwoTower
from recstack.models.youtube_dnn import YoutubeDNN
from recstack.models.sasrec import SASRec
from recstack.models.gru4rec import GRU4Rec
from recstack.models.comirec import ComiRecDR, ComiRecSA
from recstack.models.mind import MIND

__all__ = [
    "AITM",
    "BST",
    "DIEN",
    "DCN",
    "DIN",
    "ESMM",
    "FM",
    "ComiRecDR",
    "ComiRecSA",
    "GRU4Rec",
    "LR",
    "MIND",
    "MMoE",
    "PLE",
    "Behaviour",
    "DCNv2",
    "DeepCrossing",
    "DeepFM",
    "EmbeddingMLP",
    "ModelParams",
    "ParamError",
    "SharedBottom",
    "SASRec",
    "Structure",
    "TwoTower",
    "WideDeep",
    "YoutubeDNN",
    "build_model",
    "model_class",
    "model_names",
    "register_model",
]
