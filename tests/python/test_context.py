"""inference_context, the @inference decorator and the native inference_mode."""
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch

import infermode as im
from infermode import _core


def test_context_enters_the_chosen_torch_mode():
    with im.inference_context("cpu"):
        assert torch.is_inference_mode_enabled()
    with im.inference_context("xla"):
        assert not torch.is_inference_mode_enabled()
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    with im.inference_context("cpu", native=True):
        assert im.inference_mode.is_enabled()
    assert not im.inference_mode.is_enabled()


def test_decorator_keeps_name_and_docstring():
    @im.inference
    def predict(model, x):
        """Run the model."""
        return model(x)

    assert predict.__name__ == "predict"
    assert predict.__doc__ == "Run the model."

    @im.inference(device="xla")
    def other():
        """Other doc."""

    assert other.__name__ == "other" and other.__doc__ == "Other doc."

    @im.inference_mode()
    def native():
        """Native doc."""
        return im.inference_mode.is_enabled()

    assert native.__name__ == "native" and native.__doc__ == "Native doc."
    assert native() is True


def test_decorator_chooses_from_the_arguments_on_every_call():
    seen = []

    @im.inference
    def probe(x):
        seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))

    probe(torch.zeros(1))                 # a CPU tensor: inference_mode
    probe(torch.zeros(1, device="meta"))  # unknown device type: no_grad
    assert seen == [(True, False), (False, False)]

    @im.inference(device="xla")
    def forced():
        return torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    assert forced() == (False, False)
    with pytest.raises(TypeError, match="decorates a function"):
        im.inference(3)


def _native_result():
    x = torch.randn(4, 8)
    w = torch.randn(6, 8)
    with im.inference_mode():
        y = im.ops.matmul(x, w.T)
    return x, w, y


def test_native_result_is_an_ordinary_tensor_after_the_block():
    x, w, y = _native_result()
    assert isinstance(y, torch.Tensor)
    assert not y.is_inference()
    torch.testing.assert_close(y, x @ w.T, rtol=1e-5, atol=1e-5)
    y.add_(1.0)  # in-place edit after the block
    p = torch.nn.Parameter(torch.ones(6))
    (y * p).sum().backward()  # autograd through it after the block
    torch.testing.assert_close(p.grad, y.detach().sum(0))


def test_torch_inference_mode_result_breaks_the_same_steps():
    """The problem the native mode removes, shown rather than hidden."""
    x = torch.randn(4, 8)
    w = torch.randn(6, 8)
    with torch.inference_mode():
        y = x @ w.T
    assert y.is_inference()
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
        y.add_(1.0)
    p = torch.nn.Parameter(torch.ones(6))
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        (y * p).sum().backward()


def test_native_mode_runs_torch_code_without_grad_and_without_inference_tensors():
    layer = torch.nn.Linear(8, 3)
    with im.inference_mode():
        out = layer(torch.randn(2, 8))
        assert not torch.is_grad_enabled()
    assert not out.is_inference() and not out.requires_grad
    out.mul_(2)


def test_native_mode_nests_and_is_per_thread():
    mode = im.inference_mode()
    with mode:
        with mode:
            assert _core.inference_mode_enabled()
        assert _core.inference_mode_enabled()
        other = []
        t = threading.Thread(target=lambda: other.append(_core.inference_mode_enabled()))
        t.start()
        t.join()
        assert other == [False]
    assert not _core.inference_mode_enabled()


def test_warm_native_calls_do_zero_heap_allocations(rng):
    a = rng.standard_normal((64, 96), dtype=np.float32)
    b = rng.standard_normal((96, 80), dtype=np.float32)
    x = rng.standard_normal((32, 96), dtype=np.float32)
    g = rng.standard_normal(96, dtype=np.float32)
    out = np.empty((64, 80), np.float32)
    _core.reset_memory_stats()
    im.ops.matmul(a, b, out=out, threads=2)
    assert _core.memory_stats()["heap_allocations"] > 0  # outside the mode: heap scratch
    with im.inference_mode():
        im.ops.matmul(a, b, out=out, threads=2)  # warm-up grows the arena once
        im.ops.rms_norm(x, g)
        _core.reset_memory_stats()
        for _ in range(10):
            im.ops.matmul(a, b, out=out, threads=2)
            im.ops.rms_norm(x, g)
        stats = _core.memory_stats()
        assert stats["heap_allocations"] == 0
        assert stats["arena_high_water"] > 0
        assert stats["arena_used"] == 0  # every op handed its scratch back


def test_without_torch_everything_is_a_null_context():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None          # makes `import torch` fail
        import infermode as im
        choice = im.select_mode("xla")
        assert choice.name == "none", choice
        with im.inference_context():
            pass
        @im.inference
        def f(x):
            return x + 1
        assert f(1) == 2
        import numpy as np
        with im.inference_mode():
            y = im.ops.matmul(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))
        assert y.shape == (2, 4) and float(y[0, 0]) == 3.0
        print("ok", choice.reason)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "ok PyTorch is not installed" in result.stdout
