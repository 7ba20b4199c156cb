"""Hyper-parameter search (``recstack tune``): the ``tune:`` search space, the pruning callback
and the Optuna study. Optuna itself is imported only by :mod:`recstack.tuning.study`."""

from recstack.tuning.pruning import PruningReporter
from recstack.tuning.space import CategoricalParam, Direction, FloatParam, IntParam, PrunerName, TuneSpec, parse_tune_section, suggest

__all__ = ["CategoricalParam", "Direction", "FloatParam", "IntParam", "PrunerName", "PruningReporter", "TuneSpec", "parse_tune_section", "suggest"]
