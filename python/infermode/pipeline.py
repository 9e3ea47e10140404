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

A batch is a :class:`Shard`, the unit of work of both backends: :func:`plan_shards` cuts the
prompts, a :class:`Replica` (the model plus the steps that need it) runs each shard and writes its
file, and the pipeline puts the results in prompt order and has the index written. backend="local"
runs the shards one after another in this process; backend="ray" hands them to Ray workers that
each hold a replica (:mod:`infermode.distributed`), so both write the same files.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
import time
from collections.abc import Sequence as _SequenceABC
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, overload

import numpy as np
from tqdm import tqdm

from infermode._resume import resumed_shards, run_settings
from infermode.activations import INDEX_FILE, ActivationWriter
from infermode.llm import CAPTURE_POSITIONS, SUPPORTED_DTYPES, CausalLM, capture_name

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "FailedShard", "InferenceConfig", "InferencePipeline", "PipelineOutput",
           "PipelineResult", "Replica", "RunStart", "Shard", "ShardOutput", "plan_shards"]

BACKENDS = ("local", "ray")
RAY_ONLY = ("threads_per_worker", "ray_address", "max_retries")
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
    error (rather than a long run that writes nothing). ``dtype``: as
    :meth:`CausalLM.from_pretrained` takes it (None: float32 for a Hugging Face directory, as
    stored for a GGUF file). ``adapter``: a PEFT LoRA adapter directory, merged into the weights
    at load.

    ``backend="local"`` runs in this process with ``threads`` threads. ``backend="ray"`` runs
    ``workers`` Ray actors, each holding one replica of the model (loaded from ``model_path``,
    memory-mapped) and running ``threads_per_worker`` threads (None: the cluster's CPUs shared
    among the workers); batches go to whichever worker is free and give the results, files and
    sampled tokens the local backend gives. ``ray_address``: None starts a local Ray with this
    machine's cores (or uses the one this process already started); an address
    (``"ray://head:10001"``, ``"auto"``) joins a cluster, whose every node must see
    ``model_path`` and ``activations_dir`` at the same paths. ``max_retries``: how many times a
    batch whose worker died is redone on the restarted worker (None: 3) before it is reported as
    failed (see :class:`FailedShard`). See :mod:`infermode.distributed`.

        cfg = InferenceConfig("models/Qwen2.5-0.5B", batch_size=4, max_new_tokens=32)
        dataclasses.replace(cfg, batch_size=16)          # validated again
        InferenceConfig("models/Qwen2.5-0.5B", backend="ray", workers=4, threads_per_worker=2)
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
    threads_per_worker: Optional[int] = None
    ray_address: Optional[str] = None
    max_retries: Optional[int] = None

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
        self._check_backend()

    def _check_backend(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.threads_per_worker is not None and (not _is_int(self.threads_per_worker)
                                                    or self.threads_per_worker < 1):
            raise ValueError(f"threads_per_worker must be None (the cluster's CPUs shared among "
                             f"the workers) or an int >= 1, got {self.threads_per_worker!r}")
        if self.ray_address is not None and (not isinstance(self.ray_address, str)
                                             or not self.ray_address):
            raise ValueError(f"ray_address must be None (a local Ray) or a Ray address such as "
                             f"'ray://head:10001' or 'auto', got {self.ray_address!r}")
        if self.max_retries is not None and (not _is_int(self.max_retries)
                                             or self.max_retries < 0):
            raise ValueError(f"max_retries must be None (3) or an int >= 0, got "
                             f"{self.max_retries!r}")
        for name in ("threads_per_worker", "max_retries"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))
        if self.backend == "local":
            if self.workers != 1:
                raise ValueError(f"workers={self.workers} needs backend='ray' (many processes or "
                                 "machines); backend='local' runs one worker (use threads= for "
                                 "more cores)")
            for name in RAY_ONLY:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}={getattr(self, name)!r} is for backend='ray'; "
                                     "backend='local' runs in this process (threads= sets its "
                                     f"threads): set backend='ray' or leave {name} None")
        elif self.threads is not None:
            raise ValueError(f"threads={self.threads!r} is for backend='local'; with "
                             "backend='ray' each worker runs threads_per_worker threads: set "
                             "threads_per_worker instead")

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
    ``row``: where its activations are (None when none were extracted). ``error``: why the prompt
    has no result (its batch failed on every retry, backend="ray"; ``token_ids`` is then empty),
    None when it has one."""

    index: int
    prompt_length: int
    token_ids: List[int]
    text: Optional[str]
    shard: Optional[str] = None
    row: Optional[int] = None
    error: Optional[str] = None


@dataclass(frozen=True)
class FailedShard:
    """A batch that failed on every retry (its worker died each time; backend="ray"): its
    prompts have no results and it has no shard file. ``shard``: the batch's number (its file
    would have been ``shard-{shard:05d}.safetensors``)."""

    shard: int
    prompt_indexes: List[int]
    prompt_lengths: List[int]
    error: str

    def record(self) -> Dict[str, Any]:
        """Its entry in the index's ``failed`` list."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Shard:
    """The unit of work both backends run: batch ``number`` of a run, the prompts ``start``,
    ``start + 1``, ... (token ids). Its activations go to shard file ``number``, whose metadata
    records ``run``, the run's settings (see :mod:`infermode._resume`)."""

    number: int
    start: int
    prompts: List[List[int]]
    run: Optional[Dict[str, Any]] = None

    @property
    def indexes(self) -> List[int]:
        return list(range(self.start, self.start + len(self.prompts)))

    def failed(self, error: str) -> FailedShard:
        return FailedShard(self.number, self.indexes, [len(p) for p in self.prompts], error)


@dataclass(frozen=True)
class ShardOutput:
    """What running a :class:`Shard` gives: its number, its prompts' results, its index entry
    (None without activations) and the number of tokens it generated."""

    shard: int
    results: List[PipelineResult]
    record: Optional[Dict[str, Any]]
    generated: int


@dataclass(frozen=True)
class RunStart:
    """What :meth:`Replica.start` found in ``activations_dir``: the run's ``settings`` (with the
    seed an unseeded sampling run resumed had drawn), the batches an earlier run with the same
    settings finished (``finished``, skipped), and whether that run's index is there
    (``index_there``: with nothing left to compute, it stays as it is)."""

    settings: Dict[str, Any]
    finished: List[ShardOutput]
    index_there: bool


def plan_shards(prompts: List[List[int]], batch_size: int) -> List[Shard]:
    """The batches of a run, in prompt order: the same for every backend, so local and
    distributed runs write the same shards and sample the same tokens."""
    return [Shard(number, start, prompts[start:start + batch_size])
            for number, start in enumerate(range(0, len(prompts), batch_size))]


class PipelineOutput(_SequenceABC):
    """What :meth:`InferencePipeline.generate` returns: a sequence of :class:`PipelineResult` in
    prompt order, plus ``token_ids``, ``texts`` and ``activation_index`` (the path of
    ``index.json``, or None) for the whole run. ``failed``: the batches that failed on every
    retry (backend="ray"), a list of :class:`FailedShard`, empty when every prompt has a result.

        out = pipe.generate(prompts); out.texts[2] == out[2].text
    """

    def __init__(self, results: List[PipelineResult], activation_index: Optional[Path],
                 has_text: bool, failed: Sequence[FailedShard] = ()) -> None:
        self.results = results
        self.activation_index = activation_index
        self._has_text = has_text
        self.failed = list(failed)

    @property
    def failed_indexes(self) -> List[int]:
        """The prompts without a result, in order: run them again."""
        return sorted(i for f in self.failed for i in f.prompt_indexes)

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
        failed = f", {len(self.failed_indexes)} failed" if self.failed else ""
        return (f"PipelineOutput({len(self.results)} results{failed}, "
                f"activation_index={self.activation_index!r})")


class Replica:
    """One model replica and the steps of a run that need it: :class:`InferencePipeline` holds
    one in this process for backend="local", and each Ray worker holds one for backend="ray"
    (:mod:`infermode.distributed`), so both run the same code for every shard.

        replica = Replica(cfg, threads=2); replica.load()
        replica.run(Shard(0, 0, [[1, 5, 9]]), seed=0)      # -> ShardOutput
    """

    def __init__(self, config: InferenceConfig, threads: Optional[int]) -> None:
        self.config = config
        self.threads = threads
        self.model: Optional[CausalLM] = None

    def load(self) -> bool:
        """Loads the model (once) and checks ``layers_to_extract`` against it; returns whether
        it has a tokenizer (text results)."""
        if self.model is None:
            cfg = self.config
            started = time.perf_counter()
            model = CausalLM.from_pretrained(cfg.model_path, dtype=cfg.dtype, adapter=cfg.adapter,
                                             threads=self.threads)
            try:
                model.capture_points(cfg.capture_names)
            except ValueError as exc:
                raise ValueError(f"layers_to_extract, for {cfg.model_path}: {exc}") from None
            self.model = model
            logger.info("loaded %s (%d blocks, hidden %d) in %.2f s", cfg.model_path,
                        model.config.num_hidden_layers, model.config.hidden_size,
                        time.perf_counter() - started)
        return self.model.tokenizer is not None

    def _loaded(self) -> CausalLM:
        self.load()
        assert self.model is not None
        return self.model

    def _writer(self) -> ActivationWriter:
        cfg = self.config
        assert cfg.activations_dir is not None  # checked by InferenceConfig
        return ActivationWriter(Path(cfg.activations_dir), cfg.capture_names,
                                cfg.capture_positions, cfg.max_new_tokens)

    def encode(self, prompts: Any) -> List[List[int]]:
        """Every prompt as token ids, all checked (types, ids in range, context length)."""
        model = self._loaded()
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

    def start(self, overwrite: bool, resume: bool, shards: List[Shard],
              seed: Optional[int]) -> RunStart:
        """Prepares ``activations_dir`` for a run over ``shards`` (see
        :meth:`ActivationWriter.start`); with ``resume``, finds the batches an earlier run with
        the same settings finished there, or raises ValueError saying what differs."""
        model = self._loaded()
        writer = self._writer()
        found = writer.start(overwrite=overwrite, resume=resume)
        settings = run_settings(self.config, model, shards, seed)
        if not resume:
            return RunStart(settings, [], False)
        settings, contents, index_there = resumed_shards(
            writer.directory, found, shards, settings, self.config.capture_names,
            seed_given=self.config.seed is not None)
        finished = []
        for shard in shards:
            if shard.number in contents:
                c = contents[shard.number]
                texts = model._decode(c.token_ids)
                finished.append(ShardOutput(shard.number, [
                    PipelineResult(index=index, prompt_length=len(prompt), token_ids=ids,
                                   text=None if texts is None else texts[row],
                                   shard=c.record["file"], row=row)
                    for row, (index, prompt, ids) in enumerate(
                        zip(shard.indexes, shard.prompts, c.token_ids))], c.record, 0))
        if finished:
            logger.info("resuming the run in %s: %d of %d batch(es) are done there",
                        writer.directory, len(finished), len(shards))
        return RunStart(settings, finished, index_there)

    def run(self, shard: Shard, seed: int) -> ShardOutput:
        """Generates for one shard's prompts and writes its activations as shard file
        ``shard.number`` (replacing a copy an earlier attempt wrote)."""
        model = self._loaded()
        cfg = self.config
        writer = self._writer() if cfg.extract_activations else None
        if writer is not None and not writer.directory.is_dir():
            raise FileNotFoundError(
                f"activations_dir {writer.directory} does not exist on {socket.gethostname()}: "
                "with backend='ray' every worker writes its shards there, so it must be one "
                "directory every node sees at the same path (a shared file system)")
        out = model.generate(shard.prompts, max_new_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                             seed=seed, stream_offset=shard.start,
                             capture=list(cfg.capture_names) if writer is not None else None,
                             capture_positions=cfg.capture_positions)
        lengths = [len(p) for p in shard.prompts]
        record = None
        if writer is not None:
            record = writer.write_shard(shard.number, shard.indexes, lengths, out.token_ids,
                                        out.activations, run=shard.run)
        results = [PipelineResult(index=index, prompt_length=lengths[row], token_ids=list(ids),
                                  text=None if out.texts is None else out.texts[row],
                                  shard=None if record is None else record["file"],
                                  row=None if record is None else row)
                   for row, (index, ids) in enumerate(zip(shard.indexes, out.token_ids))]
        return ShardOutput(shard.number, results, record,
                           sum(len(t) for t in out.token_ids))

    def finish(self, seed: Optional[int], records: List[Dict[str, Any]],
               failed: List[Dict[str, Any]], settings: Optional[Dict[str, Any]] = None) -> Path:
        """Writes the run's ``index.json`` over the shards' ``records`` (in shard order), with
        the run's ``settings`` under "run"."""
        writer = self._writer()
        writer.shards = list(records)
        path = writer.finish({**self._index_header(seed), "run": settings}, failed)
        logger.info("wrote %d shard(s) and %s", len(records), path)
        return path

    def _index_header(self, seed: Optional[int]) -> Dict[str, Any]:
        from infermode import __version__

        model = self._loaded()
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


ShardDone = Callable[[Union[ShardOutput, FailedShard]], None]


class _LocalBackend:
    """backend="local": one replica in this process runs the shards one after another. A
    backend has ``setup() -> has_text``, ``call(step, *args)`` (a :class:`Replica` step:
    "encode", "start", "finish"), ``run(shards, seed, done)`` and ``close()``."""

    def __init__(self, config: InferenceConfig) -> None:
        self.replica = Replica(config, config.threads)

    def setup(self) -> bool:
        return self.replica.load()

    def call(self, step: str, *args: Any) -> Any:
        return getattr(self.replica, step)(*args)

    def run(self, shards: List[Shard], seed: int, done: ShardDone) -> None:
        for shard in shards:
            done(self.replica.run(shard, seed))

    def close(self) -> None:
        self.replica.model = None


class InferencePipeline:
    """Runs an :class:`InferenceConfig` over lists of prompts.

        pipe = InferencePipeline(cfg).setup()           # loads the model (once)
        out = pipe.generate(["Hello", "Bonjour"])       # or token ids: [[1, 2, 3], [4, 5]]
        pipe.close()                                    # or: with InferencePipeline(cfg) as pipe

    With ``backend="ray"``, :meth:`setup` starts (or joins) Ray and loads one replica in each
    worker; :meth:`close` stops the workers, and the local Ray if the pipeline started it.
    """

    def __init__(self, config: InferenceConfig) -> None:
        if not isinstance(config, InferenceConfig):
            raise TypeError(f"InferencePipeline needs an InferenceConfig, got "
                            f"{type(config).__name__}")
        self.config = config
        self._backend: Any = None
        self._has_text = False

    @property
    def is_setup(self) -> bool:
        return self._backend is not None

    @property
    def model(self) -> CausalLM:
        """The loaded :class:`CausalLM` (after :meth:`setup`; backend="local" only: Ray workers
        hold their own replicas)."""
        if not isinstance(self._require_setup(), _LocalBackend):
            raise RuntimeError("backend='ray' holds the model in its workers, not in this "
                               "process: load it with CausalLM.from_pretrained to use it here")
        return self._backend.replica._loaded()

    def _require_setup(self) -> Any:
        if self._backend is None:
            raise RuntimeError("InferencePipeline.setup() has not been called: call it first to "
                               "load the model")
        return self._backend

    def setup(self) -> "InferencePipeline":
        """Loads the model and checks ``layers_to_extract`` against it. A second call does
        nothing. Returns the pipeline, so ``InferencePipeline(cfg).setup()`` reads well."""
        if self._backend is not None:
            return self
        if self.config.backend == "ray":
            from infermode.distributed import RayBackend

            backend: Any = RayBackend(self.config)
        else:
            backend = _LocalBackend(self.config)
        self._has_text = backend.setup()
        self._backend = backend
        return self

    def close(self) -> None:
        """Releases the model (the Ray workers, and a local Ray this pipeline started). The
        pipeline can be set up again."""
        if self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close()

    def __enter__(self) -> "InferencePipeline":
        return self.setup()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def generate(self, prompts: Union[Sequence[str], Sequence[Sequence[int]], np.ndarray], *,
                 overwrite: bool = False, resume: bool = False,
                 progress: bool = True) -> PipelineOutput:
        """Generates for every prompt, ``batch_size`` prompts at a time; results in prompt order.

        ``prompts``: a list of strings (needs the checkpoint's tokenizer) and/or of token-id lists.
        All prompts are checked before the first batch runs. With ``extract_activations``, a
        directory that already holds a run (an ``index.json``, or shards of an unfinished run)
        raises FileExistsError unless ``overwrite=True``, which first deletes that run's files
        (only those: ``index.json``, ``shard-*.safetensors`` and leftover temporaries), or
        ``resume=True``.
        ``progress``: show a tqdm bar over prompts (all workers' together).

        ``resume=True`` continues a run that was interrupted (Ctrl-C, a crash, a lost machine):
        the batches whose shards are in ``activations_dir`` are not computed again (their results
        are read back from the shards), the others are, and the index written at the end is the
        one an uninterrupted run writes. It needs the same settings as that run: the same model,
        adapter and dtype, the same prompts, ``batch_size``, ``max_new_tokens``, sampling (an
        unseeded sampling run resumes with the seed it drew) and ``layers_to_extract`` /
        ``capture_positions``; else ValueError says what differs and nothing is touched. Threads,
        workers and the backend may change. An empty or missing directory just starts the run.

            out = pipe.generate(prompts, resume=True)     # after a Ctrl-C: computes the rest

        Sampling (``temperature > 0``): prompt i draws from random stream i of ``seed`` whatever
        its batch, so a run repeats exactly for the same seed, at any ``batch_size`` and on any
        backend, and equals one ``CausalLM.generate`` call over all prompts; without a seed one is
        drawn and recorded in the index.

        With backend="ray" a batch whose worker died on every retry is logged as a warning and
        listed in ``failed`` (and in the index); the other prompts' results are returned and
        their activations written.

            out = pipe.generate([[1, 5, 9], [1, 7]], overwrite=True)
        """
        backend = self._require_setup()
        cfg = self.config
        if resume and not cfg.extract_activations:
            raise ValueError("resume=True continues from the shards a run wrote to "
                             "activations_dir, but this config has extract_activations=False: "
                             "there is nothing to resume from")
        shards = plan_shards(backend.call("encode", prompts), cfg.batch_size)
        count = sum(len(s.prompts) for s in shards)
        seed = cfg.seed
        if seed is None and cfg.temperature > 0:
            seed = int.from_bytes(os.urandom(8), "little")
        started_run = RunStart({}, [], False)
        if cfg.extract_activations:
            started_run = backend.call("start", overwrite, resume, shards, seed)
            if cfg.temperature > 0:
                seed = started_run.settings["seed"]
            shards = [dataclasses.replace(s, run=started_run.settings) for s in shards]
        finished = {outcome.shard for outcome in started_run.finished}
        todo = [s for s in shards if s.number not in finished]

        results: List[Optional[PipelineResult]] = [None] * count
        records: List[Dict[str, Any]] = []
        failed: List[FailedShard] = []
        generated = 0
        started = time.perf_counter()
        with tqdm(total=count, unit="prompt", desc="generate", disable=not progress,
                  dynamic_ncols=True) as bar:
            def done(outcome: Union[ShardOutput, FailedShard]) -> None:
                nonlocal generated
                if isinstance(outcome, FailedShard):
                    failed.append(outcome)
                    for index, length in zip(outcome.prompt_indexes, outcome.prompt_lengths):
                        results[index] = PipelineResult(index, length, [], None,
                                                        error=outcome.error)
                    bar.update(len(outcome.prompt_indexes))
                    return
                for result in outcome.results:
                    results[result.index] = result
                if outcome.record is not None:
                    records.append(outcome.record)
                generated += outcome.generated
                bar.update(len(outcome.results))
                rate = generated / (time.perf_counter() - started)
                bar.set_postfix_str(f"{rate:.1f} tok/s" + (f", {len(failed)} batch(es) failed"
                                                            if failed else ""), refresh=False)

            for outcome in started_run.finished:
                done(outcome)
            if todo:
                backend.run(todo, seed or 0, done)

        failed.sort(key=lambda f: f.shard)
        if failed:
            logger.warning(
                "%d of %d batch(es) failed on every retry; their %d prompt(s) have no results "
                "(PipelineResult.error, PipelineOutput.failed_indexes) and no activations: %s",
                len(failed), len(shards), sum(len(f.prompt_indexes) for f in failed),
                "; ".join(f"batch {f.shard} (prompts {_ranges(f.prompt_indexes)}): {f.error}"
                          for f in failed))
        index_path = None
        if cfg.extract_activations and not todo and started_run.index_there:
            index_path = Path(cfg.activations_dir) / INDEX_FILE  # the finished run's, kept
        elif cfg.extract_activations:
            records.sort(key=lambda r: r["file"])
            index_path = backend.call("finish", seed, records, [f.record() for f in failed],
                                      started_run.settings)
        return PipelineOutput(results, index_path, self._has_text, failed)  # type: ignore[arg-type]


def _ranges(indexes: Sequence[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    spans: List[List[int]] = []
    for i in indexes:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
