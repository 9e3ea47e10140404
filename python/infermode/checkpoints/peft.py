"""LoRA adapters in PEFT's format: read a directory, check it against a base model, merge it.

A PEFT adapter directory (what ``PeftModel.save_pretrained`` writes) holds
``adapter_config.json`` (rank ``r``, ``lora_alpha``, ``use_rslora``, ``target_modules``, ...)
and ``adapter_model.safetensors``, whose keys name the base model's modules::

    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight     (r, in)
    base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight     (out, r)
    base_model.model.model.embed_tokens.lora_embedding_A               (r, vocab)
    base_model.model.model.layers.0.self_attn.q_proj.base_layer.bias   a trained bias
    base_model.model.model.norm.weight                                 a module in modules_to_save

An adapted matrix W acts as ``W + scale * B @ A`` with ``scale = lora_alpha / r`` (rsLoRA:
``lora_alpha / sqrt(r)``; ``rank_pattern`` / ``alpha_pattern`` override r and alpha per module);
an adapted embedding as ``W + scale * (B @ A).T``. Whole tensors the adapter carries replace
the base's. :func:`load_adapter` reads and checks the files; :func:`check_adapter` checks the
adapter against a base model's weight table and names; :func:`merged_tensors` computes the
weights with the adapter merged in. The legacy pickled ``adapter_model.bin`` is refused: loading
it would run code from the file.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

import numpy as np

from infermode.checkpoints._json import read_json
from infermode.checkpoints._safetensors import float32_values, open_safetensors

logger = logging.getLogger(__name__)

__all__ = ["Adapter", "LoraConfig", "LoraFactors", "check_adapter", "load_adapter",
           "merged_tensors", "same_model_name"]

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"
# Every key of a PEFT adapter saved for a causal LM starts with this (the PeftModel wrapping the
# base model's own module tree).
KEY_PREFIX = "base_model.model."
BIAS_MODES = ("none", "all", "lora_only")

PathLike = Union[str, "Path"]


@dataclass(frozen=True)
class LoraConfig:
    """The fields of ``adapter_config.json`` that decide what the adapter computes."""

    r: int
    lora_alpha: float
    use_rslora: bool = False
    target_modules: Tuple[str, ...] = ()
    bias: str = "none"
    modules_to_save: Tuple[str, ...] = ()
    fan_in_fan_out: bool = False
    base_model_name_or_path: Optional[str] = None
    rank_pattern: Mapping[str, int] = field(default_factory=dict, hash=False)
    alpha_pattern: Mapping[str, float] = field(default_factory=dict, hash=False)

    @classmethod
    def from_json(cls, path: Path) -> "LoraConfig":
        """Reads and checks ``adapter_config.json``; a ValueError names the file and the field."""
        try:
            d = read_json(path)
        except OSError as exc:
            raise ValueError(f"{path} is not a readable file: {exc}") from exc
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")

        def get(key: str, kind: Any, default: Any = ...) -> Any:
            value = d.get(key, None)
            if value is None:
                if default is ...:
                    raise ValueError(f"{path}: field {key!r} is missing")
                return default
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise ValueError(f"{path}: field {key!r} is {value!r}, expected "
                                 f"{getattr(kind, '__name__', kind)}")
            return value

        peft_type = get("peft_type", str, "LORA")
        if peft_type.upper() != "LORA":
            raise ValueError(f"{path}: peft_type is {peft_type!r}; only LoRA adapters (LORA) "
                             "are supported")
        for flag, what in (("use_dora", "DoRA (use_dora)"), ("lora_bias", "lora_bias"),
                           ("use_qalora", "QALoRA (use_qalora)")):
            if get(flag, bool, False):
                raise ValueError(f"{path}: {what} adapters are not supported; only plain LoRA")
        r = get("r", int)
        if r < 1:
            raise ValueError(f"{path}: r must be a positive int, got {r}")
        bias = get("bias", str, "none")
        if bias not in BIAS_MODES:
            raise ValueError(f"{path}: bias is {bias!r}, expected one of {BIAS_MODES}")
        targets = get("target_modules", (list, str), ())
        targets = (targets,) if isinstance(targets, str) else tuple(targets)
        to_save = tuple(get("modules_to_save", list, ()))
        rank_pattern = get("rank_pattern", dict, {})
        alpha_pattern = get("alpha_pattern", dict, {})
        for key, value in {**rank_pattern, **alpha_pattern}.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0 \
                    or not math.isfinite(value):
                raise ValueError(f"{path}: rank_pattern/alpha_pattern entry {key!r} is "
                                 f"{value!r}, expected a positive number")
            try:  # a key is a regular expression, matched as PEFT matches it
                re.compile(_pattern(key))
            except re.error as exc:
                raise ValueError(f"{path}: rank_pattern/alpha_pattern key {key!r} is not a "
                                 f"regular expression: {exc}") from None
        # JSON as Python reads it has Infinity and NaN, which would scale the update to NaNs.
        lora_alpha = float(get("lora_alpha", (int, float), 8))
        if not math.isfinite(lora_alpha):
            raise ValueError(f"{path}: lora_alpha is {lora_alpha}, expected a finite number")
        return cls(r=r, lora_alpha=lora_alpha,
                   use_rslora=get("use_rslora", bool, False), target_modules=targets,
                   bias=bias, modules_to_save=to_save,
                   fan_in_fan_out=get("fan_in_fan_out", bool, False),
                   base_model_name_or_path=get("base_model_name_or_path", str, None) or None,
                   rank_pattern=dict(rank_pattern), alpha_pattern=dict(alpha_pattern))

    def rank_and_scale(self, module: str) -> Tuple[int, float]:
        """r and the scale of the update of ``module`` ("model.layers.0.self_attn.q_proj"), as
        PEFT computes them: a pattern key matches when it is the module name's dotted suffix."""
        r = self.rank_pattern.get(_pattern_key(self.rank_pattern, module), self.r)
        alpha = self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module), self.lora_alpha)
        return int(r), float(alpha) / (math.sqrt(r) if self.use_rslora else r)


def _pattern_key(patterns: Iterable[str], module: str) -> str:
    for key in patterns:
        if re.match(_pattern(key), module):
            return key
    return module


def _pattern(key: str) -> str:
    """The regular expression PEFT matches a module name against for a pattern ``key``."""
    return rf"(.*\.)?({key})$"


@dataclass(frozen=True, eq=False)
class LoraFactors:
    """One adapted tensor's update: ``scale * b @ a`` (a matrix) or its transpose (an embedding).

    ``a``: float32 (r, in) (an embedding: (r, vocab)); ``b``: float32 (out, r) (an embedding:
    (hidden, r)).
    """

    a: np.ndarray
    b: np.ndarray
    scale: float
    embedding: bool = False

    def delta(self) -> np.ndarray:
        """The update as a float32 array of the adapted weight's shape."""
        d = (self.b @ self.a) * np.float32(self.scale)
        return np.ascontiguousarray(d.T if self.embedding else d, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class Adapter:
    """A read LoRA adapter; tensor names are the base checkpoint's ("...q_proj.weight").

    ``updates``: the low-rank updates by the weight they adapt; ``replacements``: whole float32
    tensors that take the place of the base's (trained biases, ``modules_to_save``, and the copies
    of embedding layers that PEFT saves with an adapted embedding or output layer).
    """

    path: Path
    config: LoraConfig
    updates: Mapping[str, LoraFactors]
    replacements: Mapping[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(f.a.nbytes + f.b.nbytes for f in self.updates.values()) + sum(
            t.nbytes for t in self.replacements.values())


def load_adapter(path: PathLike) -> Adapter:
    """Reads a PEFT LoRA adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``).

    Every key must be a LoRA factor or a whole tensor of a module; factors must come in A/B pairs
    of one rank that matches the config. Shapes against a base model are checked by
    :func:`check_adapter`. The files are only read.
    """
    directory = Path(path)
    if not directory.exists():
        raise FileNotFoundError(f"adapter directory {directory} does not exist")
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory: expected a PEFT adapter "
                                 f"directory ({CONFIG_FILE} + {WEIGHTS_FILE})")
    if not (directory / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_FILE}: not a PEFT adapter directory "
                                "(PeftModel.save_pretrained writes one)")
    config = LoraConfig.from_json(directory / CONFIG_FILE)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        if (directory / LEGACY_WEIGHTS_FILE).is_file():
            raise ValueError(f"{directory} holds {LEGACY_WEIGHTS_FILE}, a pickle (loading it "
                             "could run code from the file); convert it to safetensors with "
                             "PEFT: PeftModel.from_pretrained(...).save_pretrained(dir, "
                             "safe_serialization=True)")
        raise FileNotFoundError(f"{directory} has no {WEIGHTS_FILE}")
    if config.fan_in_fan_out:
        logger.warning("%s: fan_in_fan_out is true, but the projections of Llama/Qwen2 models "
                       "are nn.Linear; ignored, as PEFT does", directory / CONFIG_FILE)
    tensors = open_safetensors(weights_path)

    factors: Dict[str, Dict[str, np.ndarray]] = {}
    replacements: Dict[str, np.ndarray] = {}
    for key in tensors:
        if not key.startswith(KEY_PREFIX):
            raise ValueError(f"{weights_path}: key {key!r} does not start with {KEY_PREFIX!r}; "
                             "not a PEFT adapter for a causal language model")
        array = _as_float32(tensors[key], tensors.dtypes[key], weights_path, key)
        name = key[len(KEY_PREFIX):]
        for suffix, part in ((".lora_A.weight", "A"), (".lora_B.weight", "B"),
                             (".lora_embedding_A", "embedding A"),
                             (".lora_embedding_B", "embedding B")):
            if name.endswith(suffix):
                factors.setdefault(name[:-len(suffix)], {})[part] = array
                break
        else:
            if ".lora_" in name:
                raise ValueError(f"{weights_path}: key {key!r} is a LoRA variant this reader "
                                 "does not support (plain lora_A/lora_B factors only)")
            replacements[name.replace(".base_layer.", ".")] = array

    updates: Dict[str, LoraFactors] = {}
    for module, parts in factors.items():
        embedding = "embedding A" in parts or "embedding B" in parts
        a = parts.get("embedding A" if embedding else "A")
        b = parts.get("embedding B" if embedding else "B")
        if a is None or b is None or len(parts) != 2:
            raise ValueError(f"{weights_path}: module {module!r} has LoRA factors "
                             f"{sorted(parts)}; expected one A and one B")
        r, scale = config.rank_and_scale(module)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != r or b.shape[1] != r:
            raise ValueError(f"{weights_path}: module {module!r} has A {a.shape} and B "
                             f"{b.shape}; expected rank {r} from {CONFIG_FILE} "
                             "(A: (r, in), B: (out, r))")
        updates[module + ".weight"] = LoraFactors(a, b, scale, embedding)
    if not updates and not replacements:
        raise ValueError(f"{weights_path} holds no tensors")
    return Adapter(path=directory, config=config, updates=updates, replacements=replacements)


def _as_float32(array: np.ndarray, dtype: str, path: Path, key: str) -> np.ndarray:
    if dtype in ("float32", "float16", "float64", "bfloat16"):
        return np.ascontiguousarray(float32_values(array, dtype))
    raise ValueError(f"{path}: tensor {key!r} has dtype {dtype}; adapter tensors must be "
                     "float32, float16 or bfloat16")


def check_adapter(adapter: Adapter, shapes: Mapping[str, Tuple[int, ...]],
                  base_names: Iterable[str] = (), what: str = "the base model",
                  check_base_model: bool = True) -> None:
    """Checks that ``adapter`` fits a base model with weight table ``shapes`` (name -> shape,
    ``lm_head.weight`` included for a tied model). A ValueError names the adapter tensor and the
    base tensor that do not fit.

    ``base_names``: the names the base model goes by (its directory, its GGUF name); when the
    adapter records the base it was trained on and none of them is that model, that is an error
    too (an adapter on another base computes garbage without any error), unless
    ``check_base_model`` is false.
    """
    trained_on = adapter.config.base_model_name_or_path
    names = [n for n in base_names if n]
    if check_base_model and trained_on and names and not any(
            same_model_name(trained_on, n) for n in names):
        raise ValueError(
            f"adapter {adapter.path} was trained on base model {trained_on!r}, but {what} is "
            f"{names[0]!r}; on another base it would give wrong outputs. If this is the same "
            "model under another name, pass check_base_model=False")
    # In the base's order, so that an error names the first tensor that does not fit.
    order = {name: i for i, name in enumerate(shapes)}
    for name in sorted(adapter.updates, key=lambda n: order.get(n, -1)):
        factors = adapter.updates[name]
        if name not in shapes:
            raise ValueError(f"adapter {adapter.path} adapts {_module(name)!r}, which "
                             f"{what} does not have (is the adapter for another architecture?)")
        out, inp = shapes[name]
        a, b = factors.a, factors.b
        expected_a, expected_b = ((a.shape[0], out), (inp, b.shape[1])) if factors.embedding \
            else ((a.shape[0], inp), (out, b.shape[1]))
        if a.shape != expected_a or b.shape != expected_b:
            raise ValueError(f"adapter {adapter.path}: {_module(name)!r} has A {a.shape} and B "
                             f"{b.shape}, but {what}'s {name!r} is {(out, inp)}, which needs "
                             f"A {expected_a} and B {expected_b} (is the adapter for another "
                             "model size?)")
    for name in sorted(adapter.replacements, key=lambda n: order.get(n, -1)):
        tensor = adapter.replacements[name]
        if name not in shapes:
            raise ValueError(f"adapter {adapter.path} replaces {name!r}, which {what} does not "
                             "have (is the adapter for another architecture?)")
        if tuple(tensor.shape) != tuple(shapes[name]):
            raise ValueError(f"adapter {adapter.path} replaces {name!r} with shape "
                             f"{tuple(tensor.shape)}, but {what}'s is {tuple(shapes[name])}")


def merged_tensors(adapter: Adapter, base: Callable[[str], np.ndarray]) -> Dict[str, np.ndarray]:
    """The float32 tensors that differ from the base once ``adapter`` is merged: for each name it
    adapts or replaces, (its replacement or the base tensor, from ``base(name)``) + its update."""
    out: Dict[str, np.ndarray] = {}
    for name in dict.fromkeys([*adapter.replacements, *adapter.updates]):
        tensor = adapter.replacements.get(name)
        tensor = np.array(base(name) if tensor is None else tensor, dtype=np.float32)
        if name in adapter.updates:
            tensor += adapter.updates[name].delta()
        out[name] = tensor
    return out


def same_model_name(a: str, b: str) -> bool:
    """Whether two names denote the same model: "meta-llama/Llama-3.2-1B" and
    "/models/llama-3.2-1b" do; "Llama-3.2-1B" and "Llama-3.2-1B-Instruct" do not. A GGUF file's
    quantization suffix ("...-Instruct.Q4_1.gguf") is ignored."""
    return bool(_normalise(a)) and _normalise(a) == _normalise(b)


def _normalise(name: str) -> str:
    last = re.split(r"[\\/]", name.strip().rstrip("/\\"))[-1].lower()
    last = re.sub(r"\.gguf$", "", last)
    last = re.sub(r"[-_.](q\d\w*|iq\d\w*|f16|f32|bf16)$", "", last)
    return re.sub(r"[^a-z0-9]", "", last)


def _module(weight_name: str) -> str:
    return weight_name.rsplit(".", 1)[0]
