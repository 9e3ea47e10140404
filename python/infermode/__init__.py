"""infermode: fast transformer inference on the CPU, and one device-aware inference context.

    import infermode as im

    with im.inference_context(model):      # the right PyTorch mode for the model's device
        y = model(x)

    with im.inference_mode():               # the native mode: no inference tensors, ever
        y = im.ops.matmul(x, w.T)
"""
from __future__ import annotations

from importlib import metadata as _metadata

from infermode.context import inference, inference_context, inference_mode
from infermode.devices import ModeChoice, choose_device, select_mode
from infermode.info import cpu_info
from infermode.llm import CausalLM, GenerationOutput, ModelConfig
from infermode.pipeline import InferenceConfig, InferencePipeline
from infermode.translate import Translator
from infermode import activations, ops

try:
    __version__ = _metadata.version("infermode")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "CausalLM",
    "GenerationOutput",
    "InferenceConfig",
    "InferencePipeline",
    "ModeChoice",
    "ModelConfig",
    "Translator",
    "__version__",
    "activations",
    "choose_device",
    "cpu_info",
    "inference",
    "inference_context",
    "inference_mode",
    "ops",
    "select_mode",
]
