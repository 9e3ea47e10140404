"""Which inference mode to use on which device, and why.

PyTorch offers two ways to run a model without autograd, and neither is right everywhere:

* ``torch.inference_mode()`` is the fastest, but the tensors it makes are *inference tensors*:
  they refuse in-place updates and autograd after the block, and on XLA/TPU the mode itself fails
  ("Cannot set version_counter for inference tensor").
* ``torch.no_grad()`` works on every device.

:func:`select_mode` picks one for a device and says why. It never imports ``torch_xla`` and never
touches a device: a ``torch.device("xla")`` is enough to decide. :func:`choose_device` decides
where a whole model runs for the wrappers (infermode's core on the CPU, PyTorch elsewhere), with
the MPS policy for tensors over 4 GiB checked from the checkpoint's headers before any allocation.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

logger = logging.getLogger(__name__)

#: MPS aborts the whole process when a single tensor is larger than this.
MPS_MAX_TENSOR_BYTES = 4 * 1024**3

MODE_NAMES = ("native", "inference_mode", "no_grad", "none")

# Device types whose PyTorch backends support torch.inference_mode().
_INFERENCE_MODE_DEVICES = ("cpu", "cuda", "xpu")
#: The accelerators a model can be placed on, best first (what "auto" and ``device=None`` pick).
ACCELERATORS = ("cuda", "xpu", "mps")
_ALIASES = {"tpu": "xla"}


class DeviceError(ValueError):
    """A device that cannot run the model: not one infermode knows, not available here, or not
    one this model runs on (see :func:`choose_device`)."""


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


def _available(torch: Any, kind: str) -> bool:
    """Whether this PyTorch can run on an accelerator of type ``kind`` here."""
    backend = getattr(torch.backends if kind == "mps" else torch, kind, None)
    return backend is not None and bool(backend.is_available())


def _best_available(torch: Any) -> str:
    return next((kind for kind in ACCELERATORS if _available(torch, kind)), "cpu")


def largest_tensor_bytes(model: Any, *, adapter: Any = None, dtype: Optional[str] = None) -> int:
    """Bytes of the largest tensor of a model: the parameters and buffers of a
    ``torch.nn.Module``, or those that loading a checkpoint (a Hugging Face directory or a
    ``.gguf`` file, with a PEFT ``adapter`` directory and ``dtype`` as
    :func:`~infermode.checkpoints._sizes.largest_tensor_bytes` says) into PyTorch would make,
    read from its headers without loading it. 0 for a module without tensors.

        >>> largest_tensor_bytes("models/Qwen2.5-7B", adapter="adapters/best_ep1")
    """
    if isinstance(model, (str, os.PathLike)):
        from infermode.checkpoints._sizes import largest_tensor_bytes as from_headers

        return from_headers(model, adapter, dtype)
    sizes = [t.numel() * t.element_size() for t in model.parameters()]
    sizes += [t.numel() * t.element_size() for t in model.buffers()]
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
            return ModeChoice(cpu.name, f"{_too_large(largest)}: run on the CPU, where "
                              f"{cpu.reason}", "cpu")
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
        risk = _mps_risk(largest_tensor_bytes(model), explicit)
        if risk is not None:
            logger.warning("%s", risk)
            if not explicit:
                target = torch.device("cpu")
    return model.to(target)


def _too_large(largest: int) -> str:
    return (f"the model's largest tensor is {largest / 1024**3:.2f} GiB, over MPS's 4 GiB limit "
            "per tensor (MPS aborts the process on such a tensor)")


def _mps_risk(largest: int, explicit: bool) -> Optional[str]:
    """None when a largest tensor of ``largest`` bytes fits MPS; otherwise the warning for
    moving the model to the CPU, or (``explicit``: MPS was asked for by name) for obeying."""
    if largest <= MPS_MAX_TENSOR_BYTES:
        return None
    if explicit:
        return (f"running on MPS as asked, although {_too_large(largest)}; if it aborts, "
                "choose the CPU device")
    return (f"{_too_large(largest)}: running on the CPU instead; ask for the MPS device by name "
            "to override")


def choose_device(requested: str = "auto", largest_bytes: Union[int, Callable[[], int]] = 0,
                  *, cpu_only: Optional[str] = None) -> ModeChoice:
    """Where a model runs when infermode's core takes the CPU and PyTorch any other device:
    ``native`` on the CPU, else the PyTorch mode of the device (see :func:`select_mode`).

    ``requested``: "auto" (the best available device: CUDA, XPU, MPS, then the CPU), "cpu",
    "cuda", "xpu" or "mps" (an index such as "cuda:1" is allowed). ``largest_bytes``: the
    model's largest tensor in bytes, or a function that reads it (called only for MPS; see
    :func:`largest_tensor_bytes`). On MPS a model whose largest tensor is over 4 GiB goes to the
    CPU with a warning saying why, unless MPS was asked for by name: that is obeyed with a
    warning of the risk. ``cpu_only``: why this model can run on infermode's core only (a GGUF
    file, a quantized dtype); "auto" then means the CPU, and another device is an error.

        >>> im.choose_device("auto", lambda: largest_tensor_bytes("models/Qwen2.5-7B"))
        ModeChoice(name='native', reason="infermode's C++ core runs it ...", device='cpu')
    """
    name = requested.strip().lower() if isinstance(requested, str) else requested
    kind = name.split(":")[0] if isinstance(name, str) else None
    if kind not in ("auto", "cpu") + ACCELERATORS:
        raise DeviceError(f"device {requested!r} is not one of auto, cpu, "
                          f"{', '.join(ACCELERATORS)}")
    torch = _torch()
    explicit = kind != "auto"
    if not explicit:
        kind = "cpu" if torch is None or cpu_only else _best_available(torch)
    if kind != "cpu":
        if cpu_only:
            raise DeviceError(f"device {requested!r} cannot run this model: {cpu_only}; use "
                              "device 'cpu' or 'auto'")
        if torch is None:
            raise ImportError(f"device {requested!r} runs the model in PyTorch, which is not "
                              "installed: pip install 'infermode[torch]' transformers peft")
        if not _available(torch, kind):
            raise DeviceError(f"device {requested!r} is not available to this PyTorch "
                              f"({torch.__version__}); use device 'auto' or 'cpu'")
    risk = None
    if kind == "mps":
        risk = _mps_risk(largest_bytes() if callable(largest_bytes) else largest_bytes, explicit)
        if risk is not None and not explicit:
            kind = "cpu"
    if kind == "cpu":
        choice = select_mode("cpu", native=True)
        if cpu_only or risk:
            choice = ModeChoice(choice.name, f"{cpu_only or risk}; {choice.reason}", "cpu")
    else:
        choice = _torch_choice(torch, kind, 0)
        if risk:
            choice = ModeChoice(choice.name, f"{risk}; {choice.reason}", kind)
    if risk:
        logger.warning("%s", risk)
    logger.info("device for %r: %s", requested, choice)
    return choice
