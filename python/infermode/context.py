"""The inference contexts: PyTorch's modes chosen per device, and infermode's native mode."""
from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any, Callable, ContextManager, Optional, TypeVar

from infermode._ext import _core
from infermode.devices import ModeChoice, _torch, select_mode

F = TypeVar("F", bound=Callable[..., Any])


class inference_mode(contextlib.ContextDecorator):
    """infermode's native inference mode, as a context manager or a decorator.

    Inside it, infermode's core takes activations and scratch memory from a per-thread arena (no
    heap traffic once warm) and keeps no autograd or version bookkeeping. Results are NumPy arrays
    (or ``torch.from_numpy`` views of them when you passed torch tensors): ordinary tensors, never
    inference tensors, so they stay usable after the block — in-place edits, autograd, XLA.
    PyTorch code you run inside the block runs under ``torch.no_grad()``.

        with im.inference_mode():
            y = im.ops.matmul(x, w.T)
        y.add_(1)          # fine: y is an ordinary tensor
    """

    def __init__(self) -> None:
        self._active: list = []

    def _recreate_cm(self) -> "inference_mode":
        # As a decorator, every call (from any thread) gets its own guard.
        return type(self)()

    def __enter__(self) -> "inference_mode":
        guard = _core.InferenceModeGuard()
        guard.enter()
        no_grad = None
        torch = sys.modules.get("torch")
        if torch is not None:
            no_grad = torch.no_grad()
            no_grad.__enter__()
        self._active.append((guard, no_grad))
        return self

    def __exit__(self, *exc: Any) -> bool:
        guard, no_grad = self._active.pop()
        if no_grad is not None:
            no_grad.__exit__(*exc)
        guard.exit()
        return False

    @staticmethod
    def is_enabled() -> bool:
        """Whether the native mode is active on the calling thread."""
        return _core.inference_mode_enabled()


def context_for(choice: ModeChoice) -> ContextManager:
    """The context manager that carries out a :class:`ModeChoice`."""
    if choice.name == "native":
        return inference_mode()
    if choice.name == "none":
        return contextlib.nullcontext()
    torch = _torch()
    if choice.name == "inference_mode":
        return torch.inference_mode()
    return torch.no_grad()


def inference_context(
    device: Any = None, *, model: Any = None, native: bool = False
) -> ContextManager:
    """A context manager with the right inference mode for ``device`` (see :func:`select_mode`).

    ``device``: a string, ``torch.device``, tensor, module (its first parameter's device) or None
    (the best available device).

        with im.inference_context(model):
            logits = model(input_ids)
    """
    return context_for(select_mode(device, model=model, native=native))


def _device_from_call(args: tuple, kwargs: dict) -> Any:
    """The first tensor, module or torch.device among a call's arguments (None if none)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    kinds = (torch.Tensor, torch.nn.Module, torch.device)
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, kinds):
            return value
    return None


def inference(func: Optional[F] = None, *, device: Any = None) -> Any:
    """Decorator: run the function under :func:`inference_context`, choosing on every call.

    Without ``device`` the choice follows the first tensor, module or torch.device among the
    call's arguments (``self`` included), else the best available device.

        @im.inference
        def predict(model, x):
            return model(x)
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            target = device if device is not None else _device_from_call(args, kwargs)
            with inference_context(target):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    if func is not None:
        if not callable(func):
            raise TypeError(
                f"@inference decorates a function; got {type(func).__name__}. "
                "To choose the device, write @inference(device=...)"
            )
        return decorate(func)
    return decorate
