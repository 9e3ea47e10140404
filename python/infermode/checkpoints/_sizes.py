"""The largest tensor of a checkpoint, from its metadata alone: what the MPS policy needs to know
before anything is allocated on the device (MPS aborts the process on a tensor over 4 GiB).

Sizes are counted in the dtype a PyTorch model loaded from the checkpoint would hold, since that
is what goes to the device: float32 unless bfloat16 (or float16) is asked, the stored dtype with
"auto". A LoRA adapter's own tensors count too: its low-rank factors are small, but PEFT saves
full replacement tensors (``modules_to_save``, an ``embed_tokens.base_layer`` or ``lm_head``
retrained for a resized vocabulary) that may be larger than any tensor of the base. Merging a
LoRA pair into a base matrix leaves that matrix's size as it was.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Optional, Tuple

from infermode.checkpoints import gguf
from infermode.checkpoints._safetensors import PathLike, open_safetensors
from infermode.checkpoints.hf import _map_weight_files

#: The file in which PEFT's ``save_pretrained`` writes an adapter's tensors.
ADAPTER_WEIGHTS = "adapter_model.safetensors"

_STORED_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8,
                 "int32": 4, "int8": 1, "uint8": 1}
_ASKED_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def largest_tensor_bytes(path: PathLike, adapter: Optional[PathLike] = None,
                         dtype: Optional[str] = None) -> int:
    """Bytes of the largest tensor that loading ``path`` (a Hugging Face checkpoint directory or
    a ``.gguf`` file) with ``adapter`` (a PEFT adapter directory) into PyTorch would make.

    Reads only headers: safetensors' JSON header, GGUF's tensor table. ``dtype``: None or
    "float32" (4 bytes per value), "bfloat16" / "float16" (2), "auto" (as stored; a GGUF file's
    quantized blocks are dequantized to float32, as transformers loads them).

        >>> largest_tensor_bytes("models/Qwen2.5-7B", adapter="adapters/best_ep1") / 2**30
        2.03
    """
    sizes = [count * _bytes_per_value(stored, dtype) for count, stored in _tensors(Path(path))]
    if adapter is not None:
        sizes += [count * _bytes_per_value(stored, dtype)
                  for count, stored in _adapter_tensors(Path(adapter))]
    return max(sizes, default=0)


def _bytes_per_value(stored: str, dtype: Optional[str]) -> int:
    if dtype == "auto":
        return _STORED_BYTES.get(stored, 4)  # quantized GGUF blocks become float32
    return _ASKED_BYTES.get(dtype or "float32", 4)  # q8_0 / q4_0 run natively only


def _tensors(path: Path) -> Iterator[Tuple[int, str]]:
    """(values, stored dtype) of every tensor of a checkpoint."""
    if gguf.is_gguf(path):
        for tensor in gguf._read(path).tensors:
            yield int(tensor.n_elements), tensor.tensor_type.name.lower()
        return
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist: expected a Hugging Face "
                                "checkpoint directory or a .gguf file")
    arrays, dtypes, _ = _map_weight_files(path)  # memory maps: no tensor data is read
    for name, array in arrays.items():
        yield int(math.prod(array.shape)), dtypes[name]


def _adapter_tensors(adapter: Path) -> Iterator[Tuple[int, str]]:
    weights = adapter / ADAPTER_WEIGHTS
    if not weights.is_file():
        what = "does not exist" if not adapter.exists() else f"has no {ADAPTER_WEIGHTS}"
        raise FileNotFoundError(f"adapter directory {adapter} {what}: expected a PEFT adapter "
                                f"saved with save_pretrained (adapter_config.json + "
                                f"{ADAPTER_WEIGHTS})")
    tensors = open_safetensors(weights)
    for name, array in tensors.items():
        yield int(math.prod(array.shape)), tensors.dtypes[name]
