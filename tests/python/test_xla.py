"""torch_xla: torch.inference_mode() fails on an XLA device; infermode's context does not.

Run by ``scripts/test-xla`` in its own virtual environment (torch 2.9.0 + torch_xla 2.9.0, which
the project's torch cannot load); the main suite deselects these tests with ``-m 'not xla'``.

What triggers the failure: inside ``torch.inference_mode()``, any *view* (``t()``, ``view``,
``transpose``, slicing) of an XLA tensor made outside the block raises
``RuntimeError: Cannot set version_counter for inference tensor``. torch_xla makes the view's
output an inference tensor and then tries to share the base's version counter with it, which
inference tensors refuse. ``nn.Linear`` computes ``x @ weight.t()``, so the forward pass itself
raises: no in-place op, ``.cpu()`` or ``torch_xla.sync()`` is needed. Elementwise ops and
views of tensors made inside the block work, which is why the failure looks erratic to users.
"""
from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
import infermode  # noqa: E402

pytestmark = pytest.mark.xla

VERSION_COUNTER_ERROR = "Cannot set version_counter for inference tensor"
# XLA's CPU backend and ATen's CPU kernels sum the matmuls in different orders.
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def xla_device() -> torch.device:
    # Imported here rather than at module level: the main suite collects this file and then
    # deselects it (-m 'not xla'); a module-level skip would show there as a skipped test, and
    # setting PJRT_DEVICE would leak into that process.
    os.environ.setdefault("PJRT_DEVICE", "CPU")  # XLA on the CPU unless told otherwise
    torch_xla = pytest.importorskip("torch_xla")
    return torch_xla.device()


@pytest.fixture(scope="module")
def cpu_model_and_input() -> tuple:
    """A small MLP and a batch, on the CPU, with the output they should give."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)
    ).eval()
    x = torch.randn(5, 16)
    with torch.no_grad():
        expected = model(x)
    return model, x, expected


@pytest.fixture
def on_xla(cpu_model_and_input, xla_device) -> tuple:
    """A fresh copy of the model and input on the XLA device, and the CPU output."""
    model, x, expected = cpu_model_and_input
    return copy.deepcopy(model).to(xla_device), x.to(xla_device), expected


def test_torch_inference_mode_fails_on_xla(on_xla):
    model, x, _ = on_xla
    with pytest.raises(RuntimeError, match=VERSION_COUNTER_ERROR):
        with torch.inference_mode():
            model(x)


def test_the_trigger_is_a_view_of_a_tensor_made_outside(xla_device):
    outside = torch.ones(3, 4, device=xla_device)
    with torch.inference_mode():
        inside = torch.ones(3, 4, device=xla_device)
        inside.t()  # a view of an inference tensor is fine
        (outside * 2).relu_()  # so are elementwise and in-place ops
        with pytest.raises(RuntimeError, match=VERSION_COUNTER_ERROR):
            outside.t()


@pytest.mark.parametrize("form", ["device", "string", "module", "tensor"])
def test_inference_context_runs_on_xla_and_matches_cpu(on_xla, xla_device, form):
    model, x, expected = on_xla
    device = {"device": xla_device, "string": "xla", "module": model, "tensor": x}[form]
    with infermode.inference_context(device):
        y = model(x)
    assert not y.is_inference()
    torch.testing.assert_close(y.cpu(), expected, **TOL)


def test_inference_decorator_takes_the_device_from_the_arguments(on_xla):
    model, x, expected = on_xla

    @infermode.inference
    def forward(model, x):
        return model(x)

    torch.testing.assert_close(forward(model, x).cpu(), expected, **TOL)


def test_inference_decorator_with_an_explicit_device(on_xla, xla_device):
    model, x, expected = on_xla

    @infermode.inference(device=xla_device)
    def forward(model, x):
        return model(x)

    torch.testing.assert_close(forward(model, x).cpu(), expected, **TOL)


@pytest.mark.parametrize("form", ["device", "string"])
def test_select_mode_chooses_no_grad_on_xla(xla_device, form):
    choice = infermode.select_mode(xla_device if form == "device" else "xla")
    assert choice.name == "no_grad"
    assert choice.device == "xla"
    assert "version_counter" in choice.reason
