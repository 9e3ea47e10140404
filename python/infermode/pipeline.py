"""Batch inference over many prompts, with activations written to disk: :class:`InferencePipeline`.

    cfg = im.InferenceConfig(model_path="models/SmolLM2-135M-Instruct", batch_size=8,
                             max_new_tokens=64, extract_activations=True,
                             layers_to_extract=(3, 7, "final_norm"), activations_dir="runs/probe")
    pipe = im.InferencePipeline(cfg).setup()
    results = pipe.generate(prompts)               # PipelineOutput, one PipelineResult per prompt
    results[0].text, results.activation_index      # the first answer, runs/probe/index.json
    acts = im.activations.load_activations("runs/probe")

Prompts go through :meth:`CausalLM.generate` ``batch_size`` at a time (prompts of different
lengths need no padding); each batch's activations become one safetensors shard as soon as the
batch is done, so memory holds one batch of activations whatever the number of prompts. The file
format, and what an interrupted run leaves behind, are described in :mod:`infermode.activations`.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import time
from collections.abc import Sequence as _SequenceABC
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, overload

import numpy as np
from tqdm import tqdm

from infermode.activations import ActivationWriter
from infermode.llm import CAPTURE_POSITIONS, SUPPORTED_DTYPES, CausalLM, capture_name

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "InferenceConfig", "InferencePipeline", "PipelineOutput", "PipelineResult"]

BACKENDS = ("local", "ray")
_SEED_LIMIT = 2 ** 64

Layer = Union[int, str]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class InferenceConfig:
    """What :class:`InferencePipeline` runs, checked when it is made (errors name the field).

    ``layers_to_extract``: block indexes (``3`` means ``"blocks.3.resid_post"``, the output of
    block 3) or capture names (``"embed"``, ``"blocks.{i}.resid_post"``, ``"final_norm"``);
    they are written under ``activations_dir`` when ``extract_activations`` is True.
    ``capture_positions``: ``"generated"``, ``"all"`` or ``"prompt_mean"``, as in
    :meth:`CausalLM.generate`. Setting ``layers_to_extract`` without ``extract_activations`` is an
    error (rather than a long run that writes nothing). ``backend="ray"`` (many processes or
    machines, ``workers`` of them) is not available yet; ``"local"`` runs in this process with
    ``threads`` threads. ``dtype``: as :meth:`CausalLM.from_pretrained` takes it (None: float32
    for a Hugging Face directory, as stored for a GGUF file). ``adapter``: a PEFT LoRA adapter
    directory, merged into the weights at load.

        cfg = InferenceConfig("models/Qwen2.5-0.5B", batch_size=4, max_new_tokens=32)
        dataclasses.replace(cfg, batch_size=16)          # validated again
    """

    model_path: str
    batch_size: int = 8
    max_new_tokens: int = 512
    extract_activations: bool = False
    layers_to_extract: Tuple[Layer, ...] = ()
    activations_dir: Optional[str] = None
    workers: int = 1
    backend: str = "local"
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: Optional[int] = None
    capture_positions: str = "generated"
    threads: Optional[int] = None
    dtype: Optional[str] = None
    adapter: Optional[str] = None

    def __post_init__(self) -> None:
        # Frozen, so normalised values are stored with object.__setattr__.
        def store(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.model_path, (str, os.PathLike)) or not os.fspath(self.model_path):
            raise ValueError(f"model_path must be a checkpoint directory path, got "
                             f"{self.model_path!r}")
        store("model_path", os.fspath(self.model_path))
        if self.adapter is not None:
            if not isinstance(self.adapter, (str, os.PathLike)) or not os.fspath(self.adapter):
                raise ValueError(f"adapter must be an adapter directory path or None, got "
                                 f"{self.adapter!r}")
            store("adapter", os.fspath(self.adapter))
        for name in ("batch_size", "max_new_tokens", "workers"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
            store(name, int(value))
        if not isinstance(self.extract_activations, bool):
            raise ValueError(f"extract_activations must be True or False, got "
                             f"{self.extract_activations!r}")
        store("layers_to_extract", _check_layers(self.layers_to_extract))
        if self.activations_dir is not None:
            if not isinstance(self.activations_dir, (str, os.PathLike)) \
                    or not os.fspath(self.activations_dir):
                raise ValueError(f"activations_dir must be a directory path or None, got "
                                 f"{self.activations_dir!r}")
            store("activations_dir", os.fspath(self.activations_dir))
        if self.extract_activations:
            if not self.layers_to_extract:
                raise ValueError("layers_to_extract is empty but extract_activations is True: name "
                                 "at least one layer, e.g. layers_to_extract=(0, 'final_norm')")
            if self.activations_dir is None:
                raise ValueError("activations_dir is None but extract_activations is True: give "
                                 "the directory the shards and index.json are written to")
        elif self.layers_to_extract:
            # Most likely a forgotten flag: failing beats a long run that writes nothing.
            raise ValueError(f"layers_to_extract={self.layers_to_extract!r} is set but "
                             "extract_activations is False: set extract_activations=True, or "
                             "leave layers_to_extract empty")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "ray":
            raise ValueError("backend='ray' is not implemented yet: it comes with the Ray "
                             "(distributed inference) issue. Use backend='local' for now")
        if self.workers != 1:
            raise ValueError(f"workers={self.workers} needs a distributed backend; "
                             "backend='local' runs one worker (use threads= for more cores)")
        if not isinstance(self.temperature, (int, float, np.floating)) \
                or isinstance(self.temperature, bool) or not self.temperature >= 0:
            raise ValueError(f"temperature must be a number >= 0 (0 is greedy), got "
                             f"{self.temperature!r}")
        store("temperature", float(self.temperature))
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 keeps every token), got {self.top_k!r}")
        store("top_k", int(self.top_k))
        if not isinstance(self.top_p, (int, float, np.floating)) or isinstance(self.top_p, bool) \
                or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        store("top_p", float(self.top_p))
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < _SEED_LIMIT):
            raise ValueError(f"seed must be None or an int in [0, 2**64), got {self.seed!r}")
        store("seed", None if self.seed is None else int(self.seed))
        if self.capture_positions not in CAPTURE_POSITIONS:
            raise ValueError(f"capture_positions must be one of {CAPTURE_POSITIONS}, got "
                             f"{self.capture_positions!r}")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise ValueError(f"threads must be None (all physical cores) or an int >= 1, got "
                             f"{self.threads!r}")
        store("threads", None if self.threads is None else int(self.threads))
        if self.dtype is not None and self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not supported; supported: "
                             f"{', '.join(SUPPORTED_DTYPES)}")

    @property
    def capture_names(self) -> Tuple[str, ...]:
        """``layers_to_extract`` as capture names: ``3`` -> ``"blocks.3.resid_post"``."""
        return tuple(capture_name(layer) for layer in self.layers_to_extract)


def _check_layers(layers: Any) -> Tuple[Layer, ...]:
    if isinstance(layers, (str, int)) or not isinstance(layers, (list, tuple)):
        raise ValueError(f"layers_to_extract must be a tuple of block indexes or capture names, "
                         f"got {layers!r}")
    seen: Dict[str, Layer] = {}
    for layer in layers:
        try:
            name = capture_name(layer)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"layers_to_extract has {layer!r}: {exc}") from None
        if name in seen:
            raise ValueError(f"layers_to_extract names {name!r} twice ({seen[name]!r} and "
                             f"{layer!r})")
        seen[name] = layer
    return tuple(int(x) if _is_int(x) else x for x in layers)


@dataclass(frozen=True)
class PipelineResult:
    """One prompt's outcome. ``index``: its position in the prompt list; ``token_ids``: the new
    tokens (a stop token included); ``text``: their text (None without a tokenizer); ``shard`` and
    ``row``: where its activations are (None when none were extracted)."""

    index: int
    prompt_length: int
    token_ids: List[int]
    text: Optional[str]
    shard: Optional[str] = None
    row: Optional[int] = None


class PipelineOutput(_SequenceABC):
    """What :meth:`InferencePipeline.generate` returns: a sequence of :class:`PipelineResult` in
    prompt order, plus ``token_ids``, ``texts`` and ``activation_index`` (the path of
    ``index.json``, or None) for the whole run.

        out = pipe.generate(prompts); out.texts[2] == out[2].text
    """

    def __init__(self, results: List[PipelineResult], activation_index: Optional[Path],
                 has_text: bool) -> None:
        self.results = results
        self.activation_index = activation_index
        self._has_text = has_text

    @overload
    def __getitem__(self, i: int) -> PipelineResult: ...
    @overload
    def __getitem__(self, i: slice) -> List[PipelineResult]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[PipelineResult, List[PipelineResult]]:
        return self.results[i]

    def __len__(self) -> int:
        return len(self.results)

    @property
    def token_ids(self) -> List[List[int]]:
        return [r.token_ids for r in self.results]

    @property
    def texts(self) -> Optional[List[str]]:
        return [r.text for r in self.results] if self._has_text else None  # type: ignore[misc]

    @property
    def activations_dir(self) -> Optional[Path]:
        return None if self.activation_index is None else self.activation_index.parent

    def __repr__(self) -> str:
        return (f"PipelineOutput({len(self.results)} results, "
                f"activation_index={self.activation_index!r})")


class InferencePipeline:
    """Runs an :class:`InferenceConfig` over lists of prompts.

        pipe = InferencePipeline(cfg).setup()           # loads the model (once)
        out = pipe.generate(["Hello", "Bonjour"])       # or token ids: [[1, 2, 3], [4, 5]]
    """

    def __init__(self, config: InferenceConfig) -> None:
        if not isinstance(config, InferenceConfig):
            raise TypeError(f"InferencePipeline needs an InferenceConfig, got "
                            f"{type(config).__name__}")
        self.config = config
        self._model: Optional[CausalLM] = None

    @property
    def is_setup(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> CausalLM:
        """The loaded :class:`CausalLM` (after :meth:`setup`)."""
        if self._model is None:
            raise RuntimeError("InferencePipeline.setup() has not been called: call it first to "
                               "load the model")
        return self._model

    def setup(self) -> "InferencePipeline":
        """Loads the model and checks ``layers_to_extract`` against it. A second call does
        nothing. Returns the pipeline, so ``InferencePipeline(cfg).setup()`` reads well."""
        if self._model is not None:
            return self
        cfg = self.config
        started = time.perf_counter()
        model = CausalLM.from_pretrained(cfg.model_path, dtype=cfg.dtype, adapter=cfg.adapter,
                                         threads=cfg.threads)
        layers = model.config.num_hidden_layers
        try:
            model.capture_points(cfg.capture_names)
        except ValueError as exc:
            raise ValueError(f"layers_to_extract, for {cfg.model_path}: {exc}") from None
        self._model = model
        logger.info("loaded %s (%d blocks, hidden %d) in %.2f s", cfg.model_path, layers,
                    model.config.hidden_size, time.perf_counter() - started)
        return self

    def generate(self, prompts: Union[Sequence[str], Sequence[Sequence[int]], np.ndarray], *,
                 overwrite: bool = False, progress: bool = True) -> PipelineOutput:
        """Generates for every prompt, ``batch_size`` prompts at a time; results in prompt order.

        ``prompts``: a list of strings (needs the checkpoint's tokenizer) and/or of token-id lists.
        All prompts are checked before the first batch runs. With ``extract_activations``, a
        directory that already holds a run (an ``index.json``, or shards of an unfinished run)
        raises FileExistsError unless ``overwrite=True``, which first deletes that run's files
        (only those: ``index.json``, ``shard-*.safetensors`` and leftover temporaries).
        ``progress``: show a tqdm bar over prompts.

        Sampling (``temperature > 0``): prompt i draws from random stream i of ``seed`` whatever
        its batch, so a run repeats exactly for the same seed, at any ``batch_size``, and equals
        one ``CausalLM.generate`` call over all prompts; without a seed one is drawn and recorded
        in the index.

            out = pipe.generate([[1, 5, 9], [1, 7]], overwrite=True)
        """
        model = self.model
        cfg = self.config
        encoded = self._encode(model, prompts)
        writer: Optional[ActivationWriter] = None
        if cfg.extract_activations:
            assert cfg.activations_dir is not None  # checked by InferenceConfig
            writer = ActivationWriter(Path(cfg.activations_dir), cfg.capture_names,
                                      cfg.capture_positions, cfg.max_new_tokens)
            writer.start(overwrite=overwrite)
        seed = cfg.seed
        if seed is None and cfg.temperature > 0:
            seed = int.from_bytes(os.urandom(8), "little")
        capture = list(cfg.capture_names) if writer is not None else None

        results: List[PipelineResult] = []
        generated = 0
        started = time.perf_counter()
        with tqdm(total=len(encoded), unit="prompt", desc="generate", disable=not progress,
                  dynamic_ncols=True) as bar:
            for start in range(0, len(encoded), cfg.batch_size):
                batch = encoded[start:start + cfg.batch_size]
                out = model.generate(batch, max_new_tokens=cfg.max_new_tokens,
                                     temperature=cfg.temperature, top_k=cfg.top_k,
                                     top_p=cfg.top_p, seed=seed or 0, stream_offset=start,
                                     capture=capture, capture_positions=cfg.capture_positions)
                indexes = list(range(start, start + len(batch)))
                shard = None
                if writer is not None:
                    shard = writer.add_batch(indexes, [len(p) for p in batch], out.token_ids,
                                             out.activations)
                for row, (index, ids) in enumerate(zip(indexes, out.token_ids)):
                    results.append(PipelineResult(
                        index=index, prompt_length=len(batch[row]), token_ids=list(ids),
                        text=None if out.texts is None else out.texts[row], shard=shard,
                        row=None if shard is None else row))
                generated += sum(len(t) for t in out.token_ids)
                bar.update(len(batch))
                bar.set_postfix_str(f"{generated / (time.perf_counter() - started):.1f} tok/s",
                                    refresh=False)

        index_path = None
        if writer is not None:
            index_path = writer.finish(self._index_header(model, seed))
            logger.info("wrote %d shard(s) and %s", len(writer.shards), index_path)
        return PipelineOutput(results, index_path, has_text=model.tokenizer is not None)

    # ------------------------------------------------------------------ helpers

    def _encode(self, model: CausalLM, prompts: Any) -> List[List[int]]:
        if isinstance(prompts, np.ndarray):
            prompts = prompts.tolist()
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of prompts; for one text pass [text]")
        if not isinstance(prompts, (list, tuple)):
            raise TypeError(f"prompts must be a list of strings or of token-id lists, got "
                            f"{type(prompts).__name__}")
        if len(prompts) == 0:
            raise ValueError("prompts is empty: generate needs at least one prompt")
        for i, prompt in enumerate(prompts):
            if _is_int(prompt):
                raise TypeError(f"prompts[{i}] is an int: pass a list of token-id lists, e.g. "
                                "[[1, 2, 3]], not one flat list")
        # Validates every prompt (token ids in range, text needs a tokenizer) before any compute.
        encoded = model.encode_prompts(list(prompts))
        context = model.config.max_position_embeddings
        for i, ids in enumerate(encoded):
            if len(ids) + self.config.max_new_tokens > context:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens; with max_new_tokens="
                    f"{self.config.max_new_tokens} it exceeds the model's context of {context} "
                    "positions: shorten it or lower max_new_tokens")
        return encoded

    def _index_header(self, model: CausalLM, seed: Optional[int]) -> Dict[str, Any]:
        from infermode import __version__

        summary = {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in dataclasses.asdict(self.config).items()}
        mc = model.config
        return {
            "model_path": self.config.model_path,
            "model": {"model_type": mc.model_type, "hidden_size": mc.hidden_size,
                      "num_hidden_layers": mc.num_hidden_layers, "vocab_size": mc.vocab_size},
            # What "auto" resolved to, where the model says.
            "model_dtype": getattr(model, "dtype", self.config.dtype),
            "hidden_size": mc.hidden_size,
            "config": summary,
            "seed": seed,
            "infermode_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
