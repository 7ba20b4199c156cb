"""Data-layer tests share two cores with other suites: keep torch on one thread."""

import torch

torch.set_num_threads(1)
