"""Fixtures shared by the rl tests."""

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: one torch thread is faster than two on a shared 2-core CPU."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
