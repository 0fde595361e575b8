"""Shared test settings: offline hub, one thread, deterministic seeds.

One torch thread: the tests run tiny models, whose small ops are many times slower with two OpenMP
threads whenever the other core is busy (measured: a tiny pre-training step 600 ms with 2 threads on
a loaded 2-core machine, 45 ms with 1); subprocesses inherit it through OMP_NUM_THREADS."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
