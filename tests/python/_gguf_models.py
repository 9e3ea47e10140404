"""Tiny GGUF files for tests: a transformers model converted the way llama.cpp's converter does it.

``convert(model, tokenizer, ...)`` returns the metadata and tensors of a GGUF file as plain dicts,
so a test can break one thing before ``write_gguf`` writes them with ``gguf.GGUFWriter``. The
conversion follows ``convert_hf_to_gguf.py``: GGUF tensor names, the Q/K row permutation of
``llama`` models (``LlamaModel.permute``), no ``output.weight`` when the embeddings are tied,
Llama 3 RoPE scaling as a ``rope_freqs.weight`` tensor, and matrices quantized with
``gguf.quants.quantize`` while vectors stay F32.
"""
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import gguf
import numpy as np
import tokenizers
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
USER_DEFINED = ["<tool>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# The pre-tokenizers of the tokenizer.json files these GGUF names come from.
_GPT2_SPLIT = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")

TEXT = [
    "The quick brown fox jumps over the lazy dog. It's 12345 o'clock; we'll see 3.14159!",
    "def add(a, b):\n\treturn a + b  # adds\n\nprint(add(1, 22))\n",
    "Héllo wörld, naïve café. Ünïcödé — 東京 and 你好, emoji 😀👍.",
    "    indented   spaces\r\n\r\n and\ttabs THEY'RE I'M YOU'VE",
]


def pre_tokenizer(pre: str):
    """The Hugging Face pre-tokenizer that a GGUF ``tokenizer.ggml.pre`` name stands for."""
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        _GPT2_SPLIT])
    regex = {"llama-bpe": _LLAMA3, "qwen2": _QWEN2}[pre]
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def train_tokenizer(pre: str, vocab_size: int = 320) -> tokenizers.Tokenizer:
    """A byte-level BPE tokenizer trained on ``TEXT`` (all 256 bytes, then merges), with the
    ChatML special tokens first and one user-defined token last."""
    tok = tokenizers.Tokenizer(models.BPE(ignore_merges=pre == "llama-bpe"))
    tok.pre_tokenizer = pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(USER_DEFINED),
                                  special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT * 4, trainer)
    tok.add_tokens(USER_DEFINED)
    return tok


def _token_list(tok: tokenizers.Tokenizer) -> Tuple[List[str], List[int], List[str]]:
    """(tokens by id, their GGUF token types, merges) of a trained tokenizer."""
    import json

    state = json.loads(tok.to_str())
    vocab = tok.get_vocab(with_added_tokens=True)
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    types = [gguf.TokenType.CONTROL if t in SPECIAL else gguf.TokenType.USER_DEFINED
             if t in USER_DEFINED else gguf.TokenType.NORMAL for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    return tokens, [int(t) for t in types], merges


def _permute(weights: np.ndarray, n_head: int, n_head_kv: Optional[int]) -> np.ndarray:
    # llama.cpp's LlamaModel.permute, on NumPy arrays.
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


_NAMES = {
    "embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight":
    "ffn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight":
    "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight":
    "attn_output.weight", "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias":
    "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias", "mlp.gate_proj.weight":
    "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight":
    "ffn_down.weight",
}


def gguf_name(hf_name: str) -> str:
    if hf_name == "lm_head.weight":
        return "output.weight"
    rest = hf_name[len("model."):]
    if rest.startswith("layers."):
        _, index, rest = rest.split(".", 2)
        return f"blk.{index}.{_NAMES[rest]}"
    return _NAMES[rest]


Tensors = Dict[str, Tuple[np.ndarray, str]]


def convert(model, tok: tokenizers.Tokenizer, qtype: str = "F32", pre: str = "smollm",
            add_bos: bool = False) -> Tuple[str, Dict[str, object], Tensors]:
    """(architecture, metadata key -> value, GGUF tensor name -> (array, GGML type name)).

    Matrices are stored as ``qtype`` ("F32", "F16", "Q8_0", "Q4_0", "Q4_1"): quantized ones as
    the raw blocks ``gguf.quants.quantize`` makes; vectors always F32.
    """
    cfg = model.config
    arch = cfg.model_type
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    rope = getattr(cfg, "rope_parameters", None) or {}
    tokens, types, merges = _token_list(tok)
    meta: Dict[str, object] = {
        f"{arch}.block_count": cfg.num_hidden_layers,
        f"{arch}.context_length": cfg.max_position_embeddings,
        f"{arch}.embedding_length": cfg.hidden_size,
        f"{arch}.feed_forward_length": cfg.intermediate_size,
        f"{arch}.attention.head_count": heads,
        f"{arch}.attention.head_count_kv": kv_heads,
        f"{arch}.attention.layer_norm_rms_epsilon": float(cfg.rms_norm_eps),
        f"{arch}.rope.freq_base": float(rope.get("rope_theta", getattr(cfg, "rope_theta", 1e4))),
        f"{arch}.rope.dimension_count": head_dim,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": SPECIAL.index("<|im_start|>"),
        "tokenizer.ggml.eos_token_id": SPECIAL.index("<|im_end|>"),
        "tokenizer.ggml.add_bos_token": add_bos,
        "tokenizer.chat_template": CHATML,
    }
    if head_dim != cfg.hidden_size // heads:
        meta[f"{arch}.attention.key_length"] = head_dim
        meta[f"{arch}.attention.value_length"] = head_dim
    tensors: Tensors = {}
    for name, param in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        data = param.detach().float().numpy()
        if arch == "llama" and ".q_proj." in name:
            data = _permute(data, heads, heads)
        elif arch == "llama" and ".k_proj." in name:
            data = _permute(data, heads, kv_heads)
        tensors[gguf_name(name)] = _stored(data, qtype if data.ndim == 2 else "F32")
    if rope.get("rope_type") == "llama3":
        tensors["rope_freqs.weight"] = (_llama3_factors(rope, head_dim), "F32")
    return arch, meta, tensors


def _stored(data: np.ndarray, qtype: str) -> Tuple[np.ndarray, str]:
    if qtype == "F32":
        return np.ascontiguousarray(data, np.float32), qtype
    if qtype == "F16":
        return data.astype(np.float16), qtype
    return gguf.quants.quantize(data, gguf.GGMLQuantizationType[qtype]), qtype


def _llama3_factors(rope: dict, dim: int) -> np.ndarray:
    # convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors.
    base = rope["rope_theta"]
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_gguf(path: Path, arch: str, meta: Dict[str, object], tensors: Tensors) -> Path:
    """Writes a GGUF file with ``gguf.GGUFWriter``; ints become UINT32, floats FLOAT32."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in meta.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, list(value))
    for name, (data, qtype) in tensors.items():
        raw = None if qtype in ("F32", "F16", "F64") else gguf.GGMLQuantizationType[qtype]
        writer.add_tensor(name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
