"""Hugging Face checkpoint directories: ``config.json``, ``*.safetensors`` weights, the tokenizer.

Python reads the metadata and maps the weight files; C++ only receives buffers that were checked
here, name by name and shape by shape::

    ckpt = load_checkpoint("Qwen2.5-0.5B-Instruct")
    ckpt.config.num_hidden_layers                  # 24
    ckpt.weights["model.embed_tokens.weight"]      # read-only view into the mapped file
    ckpt.dtypes["model.embed_tokens.weight"]       # "bfloat16" (stored as np.uint16 bits)

    tokenizer, template = load_tokenizer("Qwen2.5-0.5B-Instruct")
    text = render_chat(template, [{"role": "user", "content": "Hi"}])

Two generations of ``config.json`` exist: transformers 5 writes the RoPE settings under
``rope_parameters``; older files (and most checkpoints on the Hub) use top-level ``rope_theta`` and
``rope_scaling``. Both load to the same :class:`ModelConfig`.

Nothing here writes to the checkpoint directory.
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union

import numpy as np

from infermode.checkpoints._chat import render_chat
from infermode.checkpoints._json import read_json
from infermode.checkpoints._safetensors import SafetensorsFile, open_safetensors

if TYPE_CHECKING:  # pragma: no cover
    import tokenizers

logger = logging.getLogger(__name__)

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "SUPPORTED_ROPE_TYPES",
    "WEIGHT_DTYPES",
    "Checkpoint",
    "ModelConfig",
    "SafetensorsFile",
    "iter_weight_names",
    "load_checkpoint",
    "load_special_tokens",
    "load_tokenizer",
    "open_safetensors",
    "render_chat",
    "weight_names",
]

PathLike = Union[str, "os.PathLike[str]"]

#: ``model_type`` values of ``config.json`` that the native decoder runs. SmolLM2 is "llama".
SUPPORTED_MODEL_TYPES = ("llama", "qwen2")

#: RoPE scaling types beyond plain RoPE ("default", which normalises to ``rope_scaling=None``).
SUPPORTED_ROPE_TYPES = ("llama3",)

#: Storage dtypes the decoder accepts for weights, as named in :attr:`Checkpoint.dtypes`.
WEIGHT_DTYPES = ("float32", "float16", "bfloat16")

#: The largest size (vocab_size, hidden_size, max_position_embeddings, ...) a config may give.
MAX_SIZE = 2**31 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_LLAMA3_KEYS: Tuple[Tuple[str, type], ...] = (
    ("factor", float),
    ("low_freq_factor", float),
    ("high_freq_factor", float),
    ("original_max_position_embeddings", int),
)

# Tensors some checkpoints carry that the decoder recomputes or never reads: older transformers
# saved the RoPE inverse frequencies as buffers.
_HARMLESS_EXTRAS = re.compile(r"^model\.(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq$")

_MISSING = object()


# --------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of a Llama-family or Qwen2 decoder, as read from ``config.json``.

    Validated on construction; every error names the field. ``rope_scaling`` is normalised: None
    for plain RoPE, else a dict with ``rope_type`` and that type's parameters (for "llama3":
    ``factor``, ``low_freq_factor``, ``high_freq_factor`` as floats and
    ``original_max_position_embeddings`` as an int). ``eos_token_ids`` accepts an int or a list.

        >>> cfg = ModelConfig.from_json("SmolLM2-135M/config.json")
        >>> cfg.model_type, cfg.head_dim, cfg.tie_word_embeddings
        ('llama', 64, True)
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # A dict is unhashable; leaving it out of the hash keeps the config usable as a dict key.
    rope_scaling: Optional[Dict[str, Any]] = field(default=None, hash=False)
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: Optional[int] = None
    eos_token_ids: Tuple[int, ...] = ()
    torch_dtype: Optional[str] = None

    def __post_init__(self) -> None:
        _check_model_type(self.model_type)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
            if value > MAX_SIZE:
                # The core holds sizes and token ids in 32/64-bit ints; nothing this large is a
                # real model, and a bigger number would only fail later, without naming the key.
                raise ValueError(f"{name} is {value}, more than any model has (at most "
                                 f"{MAX_SIZE}); a corrupt config?")
            object.__setattr__(self, name, int(value))
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads}): each KV head serves a whole "
                "group of query heads"
            )
        if self.head_dim % 2:
            # RoPE rotates the two halves of each head against each other.
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        for name in ("rms_norm_eps", "rope_theta"):
            value = getattr(self, name)
            # The kernels compute in float32: a value past its range would become inf there.
            if not _is_number(value) or not math.isfinite(value) or value <= 0 \
                    or value > _FLOAT32_MAX:
                raise ValueError(f"{name} must be a positive finite number (in float32's "
                                 f"range), got {value!r}")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "rope_scaling", _normalise_rope_scaling(self.rope_scaling))
        for name in ("tie_word_embeddings", "attention_bias", "mlp_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.mlp_bias:
            raise ValueError("mlp_bias=True is not supported (no Llama or Qwen2 checkpoint "
                             "uses it)")
        if self.bos_token_id is not None and (not _is_int(self.bos_token_id)
                                              or self.bos_token_id < 0):
            raise ValueError(f"bos_token_id must be a non-negative int or None, "
                             f"got {self.bos_token_id!r}")
        object.__setattr__(self, "eos_token_ids", _token_ids(self.eos_token_ids))
        # An end-of-sequence id the model cannot emit would silently never stop a generation.
        for name, ids in (("bos_token_id", (self.bos_token_id,)),
                          ("eos_token_id", self.eos_token_ids)):
            outside = [t for t in ids if t is not None and t >= self.vocab_size]
            if outside:
                raise ValueError(f"{name} {outside[0]} is outside the vocabulary "
                                 f"(vocab_size {self.vocab_size})")
        if self.torch_dtype is not None and not isinstance(self.torch_dtype, str):
            raise ValueError(f"torch_dtype must be a str or None, got {self.torch_dtype!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "config.json") -> "ModelConfig":
        """Builds a config from a parsed ``config.json``; ``source`` names it in error messages.

            >>> ModelConfig.from_dict(json.load(open("config.json")))
        """
        try:
            return cls(**_config_fields(d))
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: PathLike) -> "ModelConfig":
        """Reads ``config.json`` (``path`` is the file or the directory that holds it).

            >>> ModelConfig.from_json("SmolLM2-135M")
        """
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path.parent} has no {path.name}")
        return cls.from_dict(read_json(path), source=str(path))

    @property
    def num_kv_groups(self) -> int:
        """Query heads per KV head (1 for multi-head attention)."""
        return self.num_attention_heads // self.num_key_value_heads


def _config_fields(d: Mapping[str, Any]) -> Dict[str, Any]:
    """:class:`ModelConfig`'s fields from a parsed ``config.json``, with transformers' defaults."""
    if not isinstance(d, Mapping):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    # Checked first: another architecture's config fails here, not on some key it lacks.
    model_type = _key(d, "model_type", str)
    _check_model_type(model_type)
    hidden_act = _key(d, "hidden_act", str, "silu")
    if hidden_act != "silu":
        raise ValueError(f"hidden_act {hidden_act!r} is not supported; the decoder's MLP is "
                         "SwiGLU (hidden_act 'silu')")
    # Qwen2 can switch layers to sliding-window attention; the decoder attends to the whole
    # context, so running such a config would silently give different results.
    if _key(d, "use_sliding_window", bool, False):
        raise ValueError("use_sliding_window=true is not supported")

    num_heads = _key(d, "num_attention_heads", int)
    hidden_size = _key(d, "hidden_size", int)
    if num_heads <= 0:
        raise ValueError(f"num_attention_heads must be a positive int, got {num_heads}")
    if d.get("head_dim") is None and hidden_size % num_heads:
        # transformers would floor hidden_size / num_attention_heads: a config that means to
        # have such heads says so with head_dim.
        raise ValueError(f"hidden_size ({hidden_size}) is not divisible by num_attention_heads "
                         f"({num_heads}), and there is no head_dim to say how wide a head is")
    rope_theta, rope_scaling = _rope_settings(d)
    eos = d.get("eos_token_id")  # an int, a list of ints or null
    if eos is not None and not (_is_int(eos) or (isinstance(eos, list)
                                                and all(_is_int(t) for t in eos))):
        raise ValueError(f"key 'eos_token_id' must be an int, a list of ints or null, "
                         f"got {eos!r}")
    dtype = d.get("dtype", d.get("torch_dtype"))  # transformers 5 renamed torch_dtype to dtype
    return dict(
        model_type=model_type,
        vocab_size=_key(d, "vocab_size", int),
        hidden_size=hidden_size,
        intermediate_size=_key(d, "intermediate_size", int),
        num_hidden_layers=_key(d, "num_hidden_layers", int),
        num_attention_heads=num_heads,
        # Absent or null means plain multi-head attention, as in transformers.
        num_key_value_heads=_key(d, "num_key_value_heads", int, num_heads),
        head_dim=_key(d, "head_dim", int, hidden_size // num_heads),
        max_position_embeddings=_key(d, "max_position_embeddings", int),
        rms_norm_eps=_key(d, "rms_norm_eps", float, 1e-6),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings=_key(d, "tie_word_embeddings", bool, False),
        # Qwen2 always has q/k/v biases, and its config has no key for them.
        attention_bias=(model_type == "qwen2" or _key(d, "attention_bias", bool, False)),
        mlp_bias=_key(d, "mlp_bias", bool, False),
        bos_token_id=_key(d, "bos_token_id", int, None),
        eos_token_ids=eos,
        torch_dtype=dtype if isinstance(dtype, str) else None,
    )


def _check_model_type(model_type: str) -> None:
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not supported; supported: "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


_TYPE_NAMES = {int: "an int", float: "a number", bool: "a bool (true/false)", str: "a string"}


def _key(d: Mapping[str, Any], key: str, kind: type, default: Any = _MISSING,
         prefix: str = "") -> Any:
    """``d[key]`` checked to be of ``kind``; absent or null gives ``default`` (or an error)."""
    value = d.get(key)
    if value is None:
        if default is _MISSING:
            raise ValueError(f"required key {prefix + key!r} is missing")
        return default
    ok = {int: _is_int, float: _is_number, bool: lambda v: isinstance(v, bool),
          str: lambda v: isinstance(v, str)}[kind](value)
    if not ok:
        raise ValueError(f"key {prefix + key!r} must be {_TYPE_NAMES[kind]}, got {value!r}")
    return float(value) if kind is float else int(value) if kind is int else value


def _rope_settings(d: Mapping[str, Any]) -> Tuple[float, Optional[Mapping[str, Any]]]:
    """(rope_theta, raw RoPE scaling dict or None) from either generation of ``config.json``."""
    params = d.get("rope_parameters")
    if params is not None:
        # transformers 5: one dict holds rope_theta, rope_type and the scaling parameters.
        if not isinstance(params, Mapping):
            raise ValueError(f"key 'rope_parameters' must be an object, got {params!r}")
        theta = _key(params, "rope_theta", float, None, prefix="rope_parameters.")
        if theta is None:
            theta = _key(d, "rope_theta", float, 10000.0)
        return theta, params
    scaling = d.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, Mapping):
        raise ValueError(f"key 'rope_scaling' must be an object or null, got {scaling!r}")
    return _key(d, "rope_theta", float, 10000.0), scaling


def _normalise_rope_scaling(value: Any) -> Optional[Dict[str, Any]]:
    """None for plain RoPE, else ``{"rope_type": ..., <that type's parameters>}``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"rope_scaling must be a dict or None, got {value!r}")
    # Older configs spell it "type"; transformers 5 writes "rope_type".
    rope_type = value.get("rope_type", value.get("type"))
    if rope_type in (None, "default"):
        return None
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(
            f"rope_scaling: rope_type {rope_type!r} is not supported; supported: 'default' "
            f"(plain RoPE), {', '.join(repr(t) for t in SUPPORTED_ROPE_TYPES)}"
        )
    out: Dict[str, Any] = {"rope_type": rope_type}
    for key, kind in _LLAMA3_KEYS:
        raw = value.get(key)
        if raw is None:
            raise ValueError(f"rope_scaling: rope_type {rope_type!r} needs {key!r}")
        if not (_is_int(raw) if kind is int else _is_number(raw)) or not math.isfinite(raw) \
                or raw <= 0 or raw > MAX_SIZE:
            raise ValueError(f"rope_scaling: {key!r} must be a positive "
                             f"{'int' if kind is int else 'number'} up to {MAX_SIZE}, "
                             f"got {raw!r}")
        out[key] = kind(raw)
    if out["high_freq_factor"] <= out["low_freq_factor"]:
        # The llama3 rule blends between the two wavelength bounds by dividing by their difference.
        raise ValueError(
            f"rope_scaling: high_freq_factor ({out['high_freq_factor']}) must be greater than "
            f"low_freq_factor ({out['low_freq_factor']})"
        )
    return out


def _token_ids(value: Any) -> Tuple[int, ...]:
    """An int, a sequence of ints or None as a tuple of non-negative ints."""
    if value is None:
        return ()
    items = (value,) if _is_int(value) else value
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise ValueError(f"eos_token_ids must be an int or a sequence of ints, got {value!r}")
    ids = tuple(items)
    if not all(_is_int(t) and t >= 0 for t in ids):
        raise ValueError(f"eos_token_ids must be non-negative ints, got {value!r}")
    return tuple(int(t) for t in ids)


# ---------------------------------------------------------------------------------- weight names


def weight_names(config: ModelConfig) -> Dict[str, Tuple[int, ...]]:
    """Every tensor the decoder needs, named and shaped as in Hugging Face checkpoints.

    Shapes follow ``torch.nn.Linear``: (out_features, in_features). ``lm_head.weight`` is left
    out when the embeddings are tied.

        >>> weight_names(cfg)["model.layers.0.self_attn.k_proj.weight"]
        (128, 576)
    """
    return dict(iter_weight_names(config))


def iter_weight_names(config: ModelConfig) -> Iterator[Tuple[str, Tuple[int, ...]]]:
    """:func:`weight_names` one at a time, in the same order. Checking a checkpoint against its
    config goes through them this way, to stop at the first missing tensor: a config that
    claims billions of blocks (the file is data from the internet) would otherwise fill memory
    with their names before any check.
    """
    vocab, hidden, inter = config.vocab_size, config.hidden_size, config.intermediate_size
    q_dim = config.num_attention_heads * config.head_dim
    kv_dim = config.num_key_value_heads * config.head_dim
    yield "model.embed_tokens.weight", (vocab, hidden)
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (hidden,)
        yield p + "self_attn.q_proj.weight", (q_dim, hidden)
        yield p + "self_attn.k_proj.weight", (kv_dim, hidden)
        yield p + "self_attn.v_proj.weight", (kv_dim, hidden)
        if config.attention_bias:
            yield p + "self_attn.q_proj.bias", (q_dim,)
            yield p + "self_attn.k_proj.bias", (kv_dim,)
            yield p + "self_attn.v_proj.bias", (kv_dim,)
        yield p + "self_attn.o_proj.weight", (hidden, q_dim)
        yield p + "post_attention_layernorm.weight", (hidden,)
        yield p + "mlp.gate_proj.weight", (inter, hidden)
        yield p + "mlp.up_proj.weight", (inter, hidden)
        yield p + "mlp.down_proj.weight", (hidden, inter)
    yield "model.norm.weight", (hidden,)
    if not config.tie_word_embeddings:
        yield "lm_head.weight", (vocab, hidden)


def blocks_held(names: Iterable[str], prefix: str) -> int:
    """How many blocks tensors ``names`` hold: one more than the largest i in ``{prefix}{i}.``.

    Checked against the config before the expected tensors are looked up, so that a wrong count
    says so (rather than naming the first missing tensor, or the first unexpected one).
    """
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
    found = [int(m.group(1)) for m in map(pattern.match, names) if m]
    return max(found) + 1 if found else 0


# ------------------------------------------------------------------------------------ checkpoint

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


# Identity equality: comparing two checkpoints' arrays element by element is never what is meant.
@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A checked Hugging Face checkpoint: its config and zero-copy views of its weights.

    ``weights`` maps every name of :func:`weight_names` to a read-only NumPy view into the memory-
    mapped file (bfloat16 tensors are ``np.uint16`` bit patterns); ``dtypes`` gives each one's
    real dtype ("float32", "float16" or "bfloat16"). The views keep their files mapped: keep the
    Checkpoint (or the arrays) alive as long as anything borrows the buffers.
    """

    config: ModelConfig
    weights: Dict[str, np.ndarray] = field(repr=False)
    dtypes: Dict[str, str] = field(repr=False)
    path: Path

    @property
    def nbytes(self) -> int:
        """Bytes of weight data (what one pass over all weights reads)."""
        return sum(int(w.nbytes) for w in self.weights.values())


def load_checkpoint(path: PathLike) -> Checkpoint:
    """Reads ``config.json`` and maps the safetensors weights of a checkpoint directory.

    Accepts a single ``model.safetensors`` or shards listed in ``model.safetensors.index.json``.
    Every expected tensor must be present with its expected shape and a float dtype; extra
    tensors are an error unless known to be harmless. ``eos_token_ids`` also gets the ids that
    ``generation_config.json`` lists (instruct models often stop on more than one token).

        >>> ckpt = load_checkpoint("SmolLM2-135M-Instruct")
        >>> ckpt.weights["model.norm.weight"].shape
        (576,)
    """
    directory = Path(path)
    if not directory.exists():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory: expected a Hugging Face "
                                 "checkpoint directory (config.json + *.safetensors)")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json: a Hugging Face checkpoint "
                                "directory needs config.json and model.safetensors "
                                f"(or {INDEX_FILE} and its shards)")
    config = _with_generation_eos(ModelConfig.from_json(directory / "config.json"), directory)
    tensors, dtypes, origin = _map_weight_files(directory)
    held = blocks_held(tensors, "model.layers.")
    if held != config.num_hidden_layers:
        raise ValueError(f"{directory / 'config.json'}: num_hidden_layers is "
                         f"{config.num_hidden_layers}, but {_describe_files(origin)} "
                         f"hold{'s' if len(set(origin.values())) == 1 else ''} {held} block(s)")

    weights: Dict[str, np.ndarray] = {}
    for name, shape in iter_weight_names(config):
        if name not in tensors:
            raise ValueError(f"{directory}: tensor {name!r} (expected shape {shape}) is missing "
                             f"from {_describe_files(origin)}")
        array = tensors[name]
        if tuple(array.shape) != shape:
            raise ValueError(f"tensor {name!r} in {origin[name]} has shape {tuple(array.shape)}, "
                             f"expected {shape} from {directory / 'config.json'}")
        if dtypes[name] not in WEIGHT_DTYPES:
            raise ValueError(f"tensor {name!r} in {origin[name]} has dtype {dtypes[name]}; "
                             f"weights must be one of {', '.join(WEIGHT_DTYPES)}")
        weights[name] = array

    extras = sorted(n for n in tensors if n not in weights and not _is_harmless(n, config))
    if extras:
        shown = ", ".join(repr(n) for n in extras[:5])
        more = f" and {len(extras) - 5} more" if len(extras) > 5 else ""
        raise ValueError(f"{directory}: {len(extras)} unexpected tensor(s) for a "
                         f"{config.model_type} model with this config.json: {shown}{more}")
    logger.debug("mapped %d tensors (%.1f MiB) from %s", len(weights),
                 sum(w.nbytes for w in weights.values()) / 2**20, directory)
    return Checkpoint(config=config, weights=weights,
                      dtypes={n: dtypes[n] for n in weights}, path=directory)


def _is_harmless(name: str, config: ModelConfig) -> bool:
    # A tied checkpoint may still store lm_head.weight (a copy of the embedding); it is not used.
    return bool(_HARMLESS_EXTRAS.match(name)) or (
        name == "lm_head.weight" and config.tie_word_embeddings)


def _with_generation_eos(config: ModelConfig, directory: Path) -> ModelConfig:
    """Adds the stop tokens of ``generation_config.json``, which transformers' generate() uses."""
    path = directory / "generation_config.json"
    if not path.is_file():
        return config
    gen = read_json(path)
    eos = gen.get("eos_token_id") if isinstance(gen, Mapping) else None
    try:
        extra = _token_ids(eos)
        merged = config.eos_token_ids + tuple(t for t in extra if t not in config.eos_token_ids)
        return replace(config, eos_token_ids=merged) if merged != config.eos_token_ids else config
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


TensorMaps = Tuple[Dict[str, np.ndarray], Dict[str, str], Dict[str, Path]]


def _map_weight_files(directory: Path) -> TensorMaps:
    """Every tensor of the checkpoint: (name → view, name → dtype, name → file it came from)."""
    single, index = directory / SINGLE_FILE, directory / INDEX_FILE
    # transformers prefers the single file when both exist; so do we.
    if single.is_file():
        files = [single]
        weight_map: Optional[Dict[str, str]] = None
    elif index.is_file():
        weight_map = _read_weight_map(index)
        files = [_shard_path(directory, index, f) for f in dict.fromkeys(weight_map.values())]
    else:
        others = sorted(p.name for p in directory.iterdir()
                        if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".gguf"))
        found = f" (it has {', '.join(others)})" if others else ""
        raise FileNotFoundError(f"{directory} has no {SINGLE_FILE} or {INDEX_FILE}{found}: "
                                "infermode reads Hugging Face weights in safetensors format")

    tensors: Dict[str, np.ndarray] = {}
    dtypes: Dict[str, str] = {}
    origin: Dict[str, Path] = {}
    for file in files:
        mapped = open_safetensors(file)
        for name, array in mapped.items():
            if name in tensors:
                raise ValueError(f"tensor {name!r} is stored twice: in {origin[name]} and {file}")
            tensors[name], dtypes[name], origin[name] = array, mapped.dtypes[name], file
    for name, file_name in (weight_map or {}).items():
        if name not in tensors:
            raise ValueError(f"{index} puts {name!r} in {file_name} but that file has no such "
                             "tensor")
        if origin[name].name != file_name:
            raise ValueError(f"{index} puts {name!r} in {file_name} but it is in "
                             f"{origin[name].name}")
    return tensors, dtypes, origin


def _read_weight_map(index: Path) -> Dict[str, str]:
    data = read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, Mapping) else None
    if not isinstance(weight_map, Mapping) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise ValueError(f"{index}: 'weight_map' must be a non-empty object of tensor name → "
                         "file name")
    return dict(weight_map)


def _shard_path(directory: Path, index: Path, file_name: str) -> Path:
    # The index is data from the internet: a shard must be a plain file name inside the directory.
    if Path(file_name).name != file_name or file_name in (".", ".."):
        raise ValueError(f"{index}: shard {file_name!r} is not a plain file name")
    path = directory / file_name
    if not path.is_file():
        raise FileNotFoundError(f"{index} lists shard {file_name} but {directory} has no such "
                                "file")
    return path


def _describe_files(origin: Mapping[str, Path]) -> str:
    names = sorted({p.name for p in origin.values()})
    if len(names) <= 3:
        return ", ".join(names) if names else "the weight files (they hold no tensors)"
    return f"{len(names)} shards ({names[0]} … {names[-1]})"


# ------------------------------------------------------------------------------------- tokenizer


def load_tokenizer(path: PathLike) -> Tuple[Optional["tokenizers.Tokenizer"], Optional[str]]:
    """The checkpoint's tokenizer (from ``tokenizer.json``) and its chat template.

    Either may be None: a directory without ``tokenizer.json`` gives no tokenizer (the caller
    decides whether that is an error), one without a template gives no template. The template
    comes from ``chat_template.jinja`` (transformers 5 writes it there) when present, else from
    the ``chat_template`` key of ``tokenizer_config.json``.

        >>> tokenizer, template = load_tokenizer("SmolLM2-135M-Instruct")
        >>> tokenizer.encode("Hello").ids
    """
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"tokenizer directory {directory} does not exist")
    tokenizer = None
    tokenizer_file = directory / "tokenizer.json"
    if tokenizer_file.is_file():
        import tokenizers

        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # the Rust side raises a bare Exception
            raise ValueError(f"{tokenizer_file} could not be read: {exc}") from None
    else:
        logger.debug("%s has no tokenizer.json", directory)
    return tokenizer, _chat_template(directory)


def load_special_tokens(path: PathLike) -> Dict[str, Optional[str]]:
    """``bos_token``, ``eos_token``, ``pad_token`` and ``unk_token`` from ``tokenizer_config.json``
    (None where absent), e.g. for :func:`render_chat`'s ``bos_token`` and ``eos_token``.

        >>> load_special_tokens("SmolLM2-135M-Instruct")["eos_token"]
        '<|im_end|>'
    """
    config = _tokenizer_config(Path(path))
    out: Dict[str, Optional[str]] = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(key)
        if isinstance(value, Mapping):  # older files store AddedToken objects
            value = value.get("content")
        out[key] = value if isinstance(value, str) else None
    return out


def _tokenizer_config(directory: Path) -> Dict[str, Any]:
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _chat_template(directory: Path) -> Optional[str]:
    jinja_file = directory / "chat_template.jinja"
    if jinja_file.is_file():
        try:
            return jinja_file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{jinja_file} is not UTF-8 text: {exc}") from None
    template = _tokenizer_config(directory).get("chat_template")
    if template is None or isinstance(template, str):
        return template
    # A list of named templates ({"name": ..., "template": ...}); chat uses the "default" one.
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template
                 if isinstance(t, Mapping) and isinstance(t.get("name"), str)}
        chosen = named.get("default")
        if isinstance(chosen, str):
            return chosen
    raise ValueError(f"{directory / 'tokenizer_config.json'}: 'chat_template' must be a string or "
                     "a list of named templates with one named 'default'")
