"""Seed examples: one thread (the suite shares two cores), and the shipped examples folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES
