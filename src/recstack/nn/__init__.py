"""Neural building blocks: pure tensor modules, with no knowledge of features or batches.

Two seams models build on: :class:`SparseInputs`, the only way a model reads its embedding
tables (by feature name; ``recstack.nn.embedding.build_sparse_inputs`` builds the
implementation), and :func:`fast_path_applies` / :func:`fused_paths`, the one gate and the one
switch of every hand-fused training path.
"""

from recstack.nn.attention import ActivationUnit, PackedPositions, TargetAttention
from recstack.nn.cross import (
    CrossNetwork,
    CrossNetworkV2,
    FullRankCrossLayer,
    LowRankCrossLayer,
    MixtureCrossLayer,
)
from recstack.nn.dice import Dice, masked_batch_norm
from recstack.nn.fm import FactorizationMachine
from recstack.nn.fused import fast_path_applies, fused_paths
from recstack.nn.mlp import MLP, Activation, MLPBlock, make_activation
from recstack.nn.pooling import Pooling, masked_pool
from recstack.nn.residual import ResidualUnit
from recstack.nn.sequence import AUGRU, CausalSelfAttentionEncoder, GRUEncoder, last_position
from recstack.nn.sparse_inputs import SparseInputs
from recstack.nn.table import Embedding, FieldLookup, lookup_fields, lookup_many

__all__ = [
    "AUGRU",
    "MLP",
    "Activation",
    "ActivationUnit",
    "CausalSelfAttentionEncoder",
    "CrossNetwork",
    "CrossNetworkV2",
    "Dice",
    "Embedding",
    "FactorizationMachine",
    "FieldLookup",
    "FullRankCrossLayer",
    "GRUEncoder",
    "LowRankCrossLayer",
    "MLPBlock",
    "MixtureCrossLayer",
    "PackedPositions",
    "Pooling",
    "ResidualUnit",
    "SparseInputs",
    "TargetAttention",
    "fast_path_applies",
    "fused_paths",
    "last_position",
    "lookup_fields",
    "lookup_many",
    "make_activation",
    "masked_batch_norm",
    "masked_pool",
]
