"""Distributed tests: 2 gloo processes, one torch thread each, on tiny Parquet files."""

import torch

torch.set_num_threads(1)
