"""Every test: torch single-threaded and seeded."""
import pytest
import torch

# Two cores: keep each test single-threaded so that timings and CI stay predictable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def fresh_decisions():
    """Forget the fast-path decisions before and after the test (they are per process)."""
    from convnext_backbone import tuning
    tuning.reset()
    yield
    tuning.reset()
