"""keep_freed_memory: freed activations stay mapped for the next step (glibc only)."""

import subprocess
import sys

import pytest

from recstack.training.config import TrainerConfig

PROBE = """
import sys, torch
from recstack.training.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
x = torch.ones(6 * 2**20)  # 24 MiB: above glibc's default mmap threshold, below the raised one
held = rss_mib()
del x
print(applied, held - rss_mib())
"""


def _released_mib(mode: str) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    applied, released = out.split()
    return applied == "True", float(released)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_stay_mapped_only_after_keep_freed_memory():
    applied, released_kept = _released_mib("keep")
    if not applied:
        pytest.skip("this C library has no glibc mallopt")
    _, released_default = _released_mib("default")
    assert released_default > 20  # glibc hands the 24 MiB block straight back to the OS
    assert released_kept < 4  # kept for the next allocation of that size


def test_it_is_on_by_default_and_can_be_turned_off():
    assert TrainerConfig().keep_freed_memory is True
    assert TrainerConfig.from_dict({"keep_freed_memory": False}).keep_freed_memory is False
