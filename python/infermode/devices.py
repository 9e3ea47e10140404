"""Which inference mode to use on which device, and why.

PyTorch offers two ways to run a model without autograd, and neither is right everywhere:

* ``torch.inference_mode()`` is the fastest, but the tensors it makes are *inference tensors*:
  they refuse in-place updates and autograd after the block, and on XLA/TPU the mode itself fails
  ("Cannot set version_counter for inference tensor").
* ``torch.no_grad()`` works on every device.

:func:`select_mode` picks one for a device and says why. It never imports ``torch_xla`` and never
touches a device: a ``torch.device("xla")`` is enough to decide.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Optional

logger = logging.getLogger(__name__)

#: MPS aborts the whole process when a single tensor is larger than this.
MPS_MAX_TENSOR_BYTES = 4 * 1024**3

MODE_NAMES = ("native", "inference_mode", "no_grad", "none")

# Device types whose PyTorch backends support torch.inference_mode().
_INFERENCE_MODE_DEVICES = ("cpu", "cuda", "xpu")
_ALIASES = {"tpu": "xla"}


@dataclass(frozen=True)
class ModeChoice:
    """The mode chosen for a device: ``name`` is one of ``MODE_NAMES``; ``reason`` says why.

    ``device`` is the device type the work should run on; it differs from the one asked for
    only when the device policy moved it (a model too large for MPS runs on the CPU).

        >>> im.select_mode("xla").name
        'no_grad'
    """

    name: str
    reason: str
    device: Optional[str] = None

    def __post_init__(self) -> None:
        if self.name not in MODE_NAMES:
            raise ValueError(f"ModeChoice.name must be one of {MODE_NAMES}, got {self.name!r}")

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def _torch() -> Any:
    """torch if it can be imported, else None."""
    if "torch" in sys.modules and sys.modules["torch"] is not None:
        return sys.modules["torch"]
    try:
        import torch
    except ImportError:
        return None
    return torch


def _best_available(torch: Any) -> str:
    if torch.cuda.is_available():
        return "cuda"
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return "xpu"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def largest_tensor_bytes(module: Any) -> int:
    """Bytes of the largest parameter or buffer of a ``torch.nn.Module`` (0 if it has none)."""
    sizes = [t.numel() * t.element_size() for t in module.parameters()]
    sizes += [t.numel() * t.element_size() for t in module.buffers()]
    return max(sizes, default=0)


def device_type(device: Any = None) -> str:
    """The device type (``"cpu"``, ``"cuda"``, ``"xla"``, ...) of a device given in any form.

    ``device`` may be a string, a ``torch.device``, a tensor, a module (its first parameter's
    device) or None (the best available: CUDA, XPU, MPS, then the CPU).
    """
    torch = _torch()
    if isinstance(device, str):
        name = device.strip().lower()
        if torch is not None and name.split(":")[0] not in _ALIASES:
            try:
                return torch.device(name).type
            except RuntimeError as exc:
                raise ValueError(f"device {device!r} is not a device PyTorch knows: {exc}") from exc
        kind = name.split(":")[0]
        if not kind:
            raise ValueError("device is an empty string; pass e.g. 'cpu', 'cuda:0' or 'xla'")
        return _ALIASES.get(kind, kind)
    if torch is None:
        if device is None:
            return "cpu"
        raise TypeError(
            f"device must be a string or None when PyTorch is not installed, got {type(device).__name__}"
        )
    if device is None:
        return _best_available(torch)
    if isinstance(device, torch.device):
        return device.type
    if isinstance(device, torch.Tensor):
        return device.device.type
    if isinstance(device, torch.nn.Module):
        for tensor in list(device.parameters()) + list(device.buffers()):
            return tensor.device.type
        return "cpu"
    raise TypeError(
        "device must be a str, torch.device, torch.Tensor, torch.nn.Module or None, "
        f"got {type(device).__name__}"
    )


def _torch_choice(torch: Any, kind: str, largest: int) -> ModeChoice:
    has_inference_mode = hasattr(torch, "inference_mode")
    if kind == "xla":
        return ModeChoice(
            "no_grad",
            "XLA/TPU: torch.inference_mode() fails there with 'Cannot set version_counter for "
            "inference tensor'; torch.no_grad() works",
            kind,
        )
    if kind == "mps":
        if largest > MPS_MAX_TENSOR_BYTES:
            cpu = _torch_choice(torch, "cpu", 0)
            return ModeChoice(
                cpu.name,
                f"the model's largest tensor is {largest / 1024**3:.2f} GiB, over MPS's 4 GiB "
                f"limit per tensor (MPS aborts the process on such a tensor): run on the CPU, "
                f"where {cpu.reason}",
                "cpu",
            )
        return ModeChoice(
            "no_grad",
            "MPS: torch.no_grad(), since inference tensors are not supported by every MPS op",
            kind,
        )
    if kind in _INFERENCE_MODE_DEVICES:
        if not has_inference_mode:
            return ModeChoice(
                "no_grad",
                f"this PyTorch ({getattr(torch, '__version__', '?')}) has no torch.inference_mode",
                kind,
            )
        return ModeChoice(
            "inference_mode",
            f"{kind.upper() if kind != 'cpu' else 'CPU'}: torch.inference_mode() is supported and "
            "the fastest (no autograd, no version counters)",
            kind,
        )
    return ModeChoice(
        "no_grad",
        f"device type {kind!r} is not known to support torch.inference_mode(); "
        "torch.no_grad() is the safe choice",
        kind,
    )


def select_mode(device: Any = None, *, model: Any = None, native: bool = False) -> ModeChoice:
    """Choose the inference mode for ``device`` and say why (the choice is logged at INFO).

    The answer is for PyTorch code on that device, so the CPU gets ``inference_mode``. With
    ``native=True`` the work runs in infermode's C++ core when the device is the CPU (``native``);
    elsewhere the PyTorch mode is the fallback. ``model`` (or a module given as ``device``) lets
    the MPS policy check its largest tensor: over 4 GiB, the choice moves to the CPU.

        >>> im.select_mode("xla")
        ModeChoice(name='no_grad', reason="XLA/TPU: ...", device='xla')
    """
    torch = _torch()
    if torch is None:
        if device is not None:
            device_type(device)  # still reject what is not a device
        choice = ModeChoice("none", "PyTorch is not installed: nothing to guard (nullcontext)")
        logger.info("inference mode for %r: %s", device, choice)
        return choice
    kind = device_type(device)
    largest = 0
    if model is None and isinstance(device, torch.nn.Module):
        model = device
    if model is not None and kind == "mps":
        largest = largest_tensor_bytes(model)
    if native and kind == "cpu":
        from infermode.info import cpu_info

        choice = ModeChoice(
            "native",
            f"infermode's C++ core runs it on the CPU ({cpu_info()['isa']} kernels); it makes "
            "no PyTorch tensors inside, so none can become an inference tensor",
            "cpu",
        )
    else:
        choice = _torch_choice(torch, kind, largest)
        if native:
            choice = ModeChoice(
                choice.name,
                f"infermode's core runs on the CPU only, so {kind} runs PyTorch code: {choice.reason}",
                choice.device,
            )
    logger.info("inference mode for %s: %s", kind, choice)
    return choice


def place_model(model: Any, device: Any = None, *, explicit: bool = False) -> Any:
    """Move ``model`` to ``device`` unless the device policy forbids it, and return it.

    On MPS a model whose largest tensor exceeds 4 GiB would abort the process, so it goes to the
    CPU with a warning, checked before anything is allocated on MPS. With ``explicit=True`` (the
    user asked for MPS by name) the request is obeyed with a warning of the risk.
    """
    torch = _torch()
    if torch is None:
        raise ImportError("place_model needs PyTorch: pip install 'infermode[torch]'")
    target = torch.device(device) if device is not None else torch.device(device_type(None))
    if target.type == "mps":
        largest = largest_tensor_bytes(model)
        if largest > MPS_MAX_TENSOR_BYTES:
            size = f"{largest / 1024**3:.2f} GiB"
            if explicit:
                logger.warning(
                    "placing the model on MPS as asked, although its largest tensor is %s: MPS "
                    "aborts the process on a tensor over 4 GiB", size
                )
            else:
                logger.warning(
                    "the model's largest tensor is %s, over MPS's 4 GiB limit per tensor (MPS "
                    "aborts the process on such a tensor): running on the CPU instead; pass the "
                    "device explicitly to override", size
                )
                target = torch.device("cpu")
    return model.to(target)
