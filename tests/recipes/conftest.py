"""Fixtures shared by the recipe tests."""

import pytest


@pytest.fixture()
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP barrier stalls (10x faster here)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
