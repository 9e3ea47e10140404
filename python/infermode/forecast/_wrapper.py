"""The pattern every forecasting wrapper follows.

torch is optional at import; the model call runs in the inference context the device calls for
(infermode's native core on the CPU, upstream PyTorch under plain ``no_grad`` elsewhere, with the
reason logged); a forecast that runs out of memory is retried with half the batch.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, ContextManager, List, Optional, Sequence, Tuple, TypeVar

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
