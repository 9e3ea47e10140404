"""The PyTorch path: a Hugging Face checkpoint run by transformers (and PEFT for LoRA adapters)
on a device infermode's core does not run on (it runs on the CPU only): CUDA, XPU, MPS.

Kept to what the translator and the CLI need: greedy generation of a batch, the chat template,
adapters. The tokenizer side (chat template, stop ids, prompt checks, decoding) is
:class:`~infermode.llm.CausalLM`'s own code, so a prompt becomes the same token ids on either
path, and a batch of prompts of different lengths is left-padded as transformers expects.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, ContextManager, List, Optional, Sequence, Union

from infermode.checkpoints import gguf
from infermode.checkpoints.hf import (ModelConfig, _with_generation_eos, load_special_tokens,
                                      load_tokenizer)
from infermode.context import inference_context
from infermode.llm import CausalLM, GenerationOutput, Prompts

logger = logging.getLogger(__name__)

#: infermode's dtypes that a PyTorch model can hold ("auto": as the checkpoint stores them).
TORCH_DTYPES = ("float32", "bfloat16", "auto")


class TorchLM:
    """A decoder LM in PyTorch on ``device``, with :class:`~infermode.llm.CausalLM`'s interface
    for what the translator uses: ``generate`` (greedy), ``apply_chat_template``,
    ``chat_stop_ids``, ``load_adapter`` / ``set_adapter``.

        lm = TorchLM.from_pretrained("models/Qwen2.5-0.5B-Instruct", device="mps")
    """

    # The tokenizer side needs only tokenizer, chat_template, special_tokens and config.
    apply_chat_template = CausalLM.apply_chat_template
    chat_stop_ids = CausalLM.chat_stop_ids
    encode_prompts = CausalLM.encode_prompts
    _special_tokens = CausalLM._special_tokens
    _decode = CausalLM._decode

    def __init__(self, module: Any, path: Path, device: str, dtype: str) -> None:
        self.module = module
        self.device = device
        self.dtype = dtype
        self.config = _with_generation_eos(ModelConfig.from_json(path / "config.json"), path)
        self.tokenizer, self.chat_template = load_tokenizer(path)
        self.special_tokens = self._special_tokens(load_special_tokens(path))
        self.adapters: List[str] = []
        self.active_adapter: Optional[str] = None

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike, None], device: str = "cpu",
                        dtype: Optional[str] = None, adapter: Optional[str] = None,
                        merge: bool = True) -> "TorchLM":
        """Loads a Hugging Face checkpoint directory with transformers onto ``device``, with a
        PEFT ``adapter`` directory merged into the weights (``merge=False``: kept apart, and
        active). ``dtype``: "float32" (None), "bfloat16" or "auto" (as stored)."""
        transformers = _import("transformers")
        if path is None or gguf.is_gguf(path):
            raise ValueError(f"{path or 'the bundled model'} is a GGUF file, which only "
                             "infermode's CPU core runs; use the CPU device, or a Hugging Face "
                             "checkpoint directory on another device")
        directory = Path(path)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory} is not a Hugging Face checkpoint directory "
                                    "(no config.json)")
        dtype = dtype or "float32"
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype {dtype!r} runs on infermode's CPU core only; on {device} "
                             f"use one of {', '.join(TORCH_DTYPES)}")
        torch = _import("torch")
        module = transformers.AutoModelForCausalLM.from_pretrained(
            directory, dtype="auto" if dtype == "auto" else getattr(torch, dtype))
        lm = cls(module.eval(), directory, device, dtype)
        if adapter is not None:
            name = lm.load_adapter(adapter)
            if merge:
                lm.module, lm.adapters = lm.module.merge_and_unload(), []
            else:
                lm.set_adapter(name)
        lm.module.to(device)
        return lm

    def load_adapter(self, path: Union[str, os.PathLike], name: Optional[str] = None) -> str:
        """Loads a PEFT adapter directory under ``name`` (default: the directory's name) beside
        the others, without making it active; returns the name."""
        peft = _import("peft")
        name = name or Path(path).name
        if name in self.adapters:
            raise ValueError(f"an adapter named {name!r} is loaded already; pass another name")
        if not (Path(path) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"adapter directory {path} has no adapter_config.json: "
                                    "expected a PEFT adapter saved with save_pretrained")
        if isinstance(self.module, peft.PeftModel):
            self.module.load_adapter(str(path), adapter_name=name)
        else:
            self.module = peft.PeftModel.from_pretrained(self.module, str(path), adapter_name=name)
        self.module.to(self.device)
        self.adapters.append(name)
        return name

    def set_adapter(self, name: Optional[str]) -> None:
        """Makes adapter ``name`` the active one; None runs the base model alone."""
        if name is not None:
            if name not in self.adapters:
                raise ValueError(f"no adapter named {name!r} is loaded; loaded: "
                                 f"{', '.join(self.adapters) or 'none'}")
            self.module.set_adapter(name)
        self.active_adapter = name

    def generate(self, prompts_or_ids: Prompts, max_new_tokens: int = 32,
                 stop: Optional[Sequence[int]] = None) -> GenerationOutput:
        """Greedy generation for each prompt, as :meth:`CausalLM.generate` with
        ``temperature=0``: new tokens up to and including the first stop token."""
        torch = _import("torch")
        transformers = _import("transformers")
        prompts = self.encode_prompts(prompts_or_ids)
        stop_ids = list(self.config.eos_token_ids if stop is None else stop)
        width = max(len(p) for p in prompts)
        pad = stop_ids[0] if stop_ids else 0
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                            device=self.device)
        # Explicit settings: a checkpoint's generation_config.json may ask for sampling.
        settings = transformers.GenerationConfig(
            do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop_ids or None,
            pad_token_id=pad)
        with inference_context(self.device), self._adapter_scope():
            out = self.module.generate(input_ids=ids, attention_mask=mask,
                                       generation_config=settings)
        tokens = [_until_stop(row[width:].tolist(), stop_ids) for row in out]
        return GenerationOutput(token_ids=tokens, texts=self._decode(tokens), activations={})

    def _adapter_scope(self) -> ContextManager:
        if self.active_adapter is None and self.adapters:
            return self.module.disable_adapter()
        return contextlib.nullcontext()


def _until_stop(tokens: List[int], stop_ids: Sequence[int]) -> List[int]:
    for i, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[:i + 1]
    return tokens


def _import(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError as exc:
        raise ImportError(f"running a model on a PyTorch device needs {name}: pip install "
                          "'infermode[torch]' transformers peft") from exc
