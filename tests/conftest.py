"""Every test: torch single-threaded and seeded."""
import pytest
import torch

# Two cores: keep each test single-threaded so that timings and CI stay predictable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
