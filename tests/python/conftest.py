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


@pytest.fixture
def simulated_mps(monkeypatch):
    """This machine as a Mac: MPS available (a test must never place anything on it)."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)


@pytest.fixture(scope="session")
def lora_base(tmp_path_factory):
    """A tiny random Llama checkpoint (word-level tokenizer, ChatML) to put adapters on."""
    from _tiny_models import save_llama

    return save_llama(tmp_path_factory.mktemp("lora_base"), 96, 64, 3, 256, seed=5)


@pytest.fixture(scope="session")
def lora_adapter(lora_base, tmp_path_factory):
    """A PEFT LoRA adapter for ``lora_base`` in a directory named ``best_ep1``."""
    from _tiny_models import save_lora

    return save_lora(lora_base, tmp_path_factory.mktemp("adapters") / "best_ep1", seed=1)
