import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def restore_isa():
    """Lets a test switch the active ISA path and puts the previous one back."""
    from infermode import _core

    previous = _core.active_isa()
    yield _core
    _core.set_isa(previous)
