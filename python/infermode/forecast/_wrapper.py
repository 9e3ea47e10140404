"""The pattern every forecasting wrapper follows.

torch is optional at import; the model call runs in the inference context the device calls for
(infermode's native core on the CPU, upstream PyTorch under plain ``no_grad`` elsewhere, with the
reason logged); a forecast that runs out of memory is retried with half the batch.
"""
from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, Callable, ContextManager, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from infermode.devices import _torch, select_mode

logger = logging.getLogger("infermode.forecast")

T = TypeVar("T")


def _no_grad() -> ContextManager:
    """The plain no-grad path of the fallback: its outputs are ordinary tensors."""
    torch = _torch()
    return torch.no_grad() if torch is not None else contextlib.nullcontext()


def module_device(module: Any) -> Any:
    """The device of a module's first parameter (the CPU for one without parameters)."""
    for p in module.parameters():
        return p.device
    return "cpu"


def check_count(value: Any, name: str) -> None:
    """A positive whole number of steps or samples: TypeError for another kind (2.5, True),
    ValueError for zero or less; the message names the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive whole number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def eval_view(module: Any) -> Any:
    """A shallow copy of ``module`` and its submodules in eval mode: the same parameter and
    buffer objects, so no weight is copied and the user's module (and its mode) is untouched.
    The wrappers swap their native parts into such a view."""
    clone = copy.copy(module)
    clone._modules = {name: None if child is None else eval_view(child)
                      for name, child in module._modules.items()}
    clone.training = False
    return clone


def choose_path(modules: Sequence[Any], device: Any = None) -> Tuple[bool, str]:
    """Whether the native core can run ``modules`` on ``device``, and why (or why not).

    Native needs the CPU and float32 parameters; anything else runs upstream's PyTorch code.
    """
    if device is None:
        device = module_device(modules[0])
    choice = select_mode(device, native=True)
    if choice.name != "native":
        return False, choice.reason
    for module in modules:
        for name, p in module.named_parameters():
            if p.device.type != "cpu" or str(p.dtype) != "torch.float32":
                return False, (f"parameter {name!r} of {type(module).__name__} is {p.dtype} on "
                               f"{p.device}; the native core runs float32 models on the CPU")
    return True, choice.reason


def log_path(wrapper: str, native: bool, reason: str) -> None:
    if native:
        logger.info("%s: native: %s", wrapper, reason)
    else:
        logger.warning("%s: falling back to the upstream PyTorch model under no_grad: %s",
                       wrapper, reason)


def is_memory_error(exc: BaseException) -> bool:
    """Out of memory, as Python, torch (CUDA, MPS) or an allocator reports it."""
    if isinstance(exc, MemoryError):
        return True
    torch = _torch()
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def retry_shrinking(run: Callable[[int], T], size: int,
                    smaller: Callable[[int], Optional[int]], what: str, name: str) -> T:
    """``run(size)`` under ``no_grad``; while it runs out of memory, again with ``smaller(size)``
    (``name`` is the argument ``size`` is, for the log). Raises once ``smaller`` gives None."""
    while True:
        try:
            with _no_grad():
                return run(size)
        except Exception as exc:
            next_size = smaller(size)
            if not is_memory_error(exc) or next_size is None:
                raise
            logger.warning("%s: out of memory with %s %d; retrying with %d (%s)", what, name,
                           size, next_size, exc)
            size = next_size


def with_retries(run: Callable[[Sequence[Any]], T], items: Sequence[Any],
                 batch_size: Optional[int] = None, what: str = "forecast") -> List[T]:
    """``run`` over ``items`` in batches of ``batch_size`` (all at once when None), halving the
    batch and retrying the failed one whenever it runs out of memory. Returns each batch's result,
    in order; a single item that still runs out of memory raises."""
    size = max(1, batch_size or len(items))
    results: List[T] = []
    start = 0
    while start < len(items):
        batch = items[start:start + size]
        try:
            results.append(run(batch))
        except Exception as exc:
            if not is_memory_error(exc) or size == 1:
                raise
            size = max(1, size // 2)
            logger.warning("%s: out of memory with a batch of %d; retrying with %d (%s)", what,
                           len(batch), size, exc)
            continue
        start += len(batch)
    return results
