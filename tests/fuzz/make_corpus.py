"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/) and the tiny base
checkpoint the adapter and tokenizer targets load onto (tests/fuzz/tiny-llama/).

Every seed is a valid file set that infermode loads, written by the same tools the tests use
(transformers, PEFT, tests/python/_tiny_models.py and _gguf_models.py), with dimensions kept
tiny so that a seed is a few KB: the fuzzer mutates bytes at random, and in a small file more of
them land in headers and metadata. Run it again after changing what a seed should hold:

    python tests/fuzz/make_corpus.py
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from _harness import ADAPTER_FILES, HF_FILES, HERE, REPO, TINY_LLAMA, TOKENIZER_FILES, join_files

sys.path.insert(0, str(REPO / "tests" / "python"))
import _gguf_models  # noqa: E402 - needs the path above
import _tiny_models  # noqa: E402

CORPUS = HERE / "corpus"
# The base's vocabulary is large enough for the tiny BPE tokenizer's ids too.
BASE_VOCAB, BASE_HIDDEN, BASE_CONTEXT = 48, 8, 64
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
               "rope_theta": 10000.0}
# A template using what real ones use: a namespace, loop variables, tojson, raise_exception,
# the generation tag.
RICH_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{%- set ns.system = m['content'] -%}"
    "{%- elif m['role'] not in ['user', 'assistant'] -%}"
    "{{ raise_exception('unknown role ' + m['role']) }}"
    "{%- else -%}<|im_start|>{{ m['role'] }}\n"
    "{%- if loop.first and ns.system %}{{ ns.system | tojson }}\n{% endif -%}"
    "{%- generation -%}{{ m['content'] | trim }}{%- endgeneration -%}<|im_end|>\n"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}"
)


def main() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = write_base(tmp)
        corpora = {
            "hf_checkpoint": hf_seeds(tmp, base),
            "gguf": gguf_seeds(),
            "peft_adapter": adapter_seeds(tmp, base),
            "tokenizer": tokenizer_seeds(base),
            "core_boundary": boundary_seeds(),
            "stack": stack_seeds(),
        }
    for target, seeds in corpora.items():
        (CORPUS / target).mkdir(parents=True)
        for name, data in seeds.items():
            (CORPUS / target / name).write_bytes(data)
        sizes = [len(d) for d in seeds.values()]
        print(f"{target}: {len(seeds)} seeds, {min(sizes)} to {max(sizes)} bytes")
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"corpus: {total} bytes; base checkpoint in {TINY_LLAMA}")


def read_files(directory: Path) -> Dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------- the base checkpoint


def write_base(tmp: Path) -> Path:
    """tests/fuzz/tiny-llama: a random Llama, hidden 8, one block, with a word-level tokenizer
    and ChatML (_tiny_models.save_llama). PEFT needs it as a transformers model, so it is made
    in a temporary directory first; generation_config.json stays there."""
    made = _tiny_models.save_llama(tmp / "tiny-llama", BASE_VOCAB, BASE_HIDDEN, 1, BASE_CONTEXT,
                                   seed=0)
    if TINY_LLAMA.exists():
        shutil.rmtree(TINY_LLAMA)
    TINY_LLAMA.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(made / name, TINY_LLAMA / name)
    return made


# ------------------------------------------------------------------------------ HF checkpoints


def hf_seeds(tmp: Path, base: Path) -> Dict[str, bytes]:
    import safetensors.numpy
    import torch
    import transformers

    seeds = {}
    files = {n: (base / n).read_bytes() for n in ("config.json", "model.safetensors",
                                                   "generation_config.json")}
    seeds["llama-f32"] = join_files(files, HF_FILES)

    # The older config.json keys (top-level rope_theta, rope_scaling, torch_dtype).
    config = json.loads(files["config.json"])
    config.pop("rope_parameters", None)
    config.update(rope_theta=10000.0, rope_scaling=None, torch_dtype="float32")
    seeds["llama-f32-old-config"] = join_files(
        {"config.json": json.dumps(config).encode(), "model.safetensors":
         files["model.safetensors"]}, HF_FILES)

    # bfloat16, tied embeddings, llama3 RoPE scaling in transformers 5's rope_parameters.
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(
        vocab_size=16, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
        tie_word_embeddings=True, rope_parameters=dict(LLAMA3_ROPE), eos_token_id=[2, 3])
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(tmp / "llama-bf16")
    seeds["llama-bf16-tied-llama3"] = join_files(
        {n: (tmp / "llama-bf16" / n).read_bytes() for n in ("config.json", "model.safetensors")},
        HF_FILES)

    # Qwen2 (q/k/v biases) in float16, in two shards with their index.
    torch.manual_seed(2)
    cfg = transformers.Qwen2Config(
        vocab_size=16, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    tensors = {k: v.detach().half().numpy() for k, v in
               transformers.Qwen2ForCausalLM(cfg).state_dict().items()}
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    files = {"config.json": cfg.to_json_string().encode()}
    for shard, keys in shards.items():
        safetensors.numpy.save_file({k: tensors[k] for k in keys}, tmp / shard)
        files[shard] = (tmp / shard).read_bytes()
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    seeds["qwen2-f16-sharded"] = join_files(files, HF_FILES)
    return seeds


# -------------------------------------------------------------------------------------- GGUF


def tiny_bpe(pre: str, vocab_size: int):
    """A byte-level BPE tokenizer like _gguf_models.train_tokenizer's, but over the few bytes of
    a short text rather than all 256: a GGUF seed's vocabulary stays a few dozen tokens."""
    from tokenizers import Tokenizer, decoders, models, trainers

    tok = Tokenizer(models.BPE(ignore_merges=pre == "llama-bpe"))
    tok.pre_tokenizer = _gguf_models.pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    special = _gguf_models.SPECIAL
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(_gguf_models.USER_DEFINED),
                                  special_tokens=special, show_progress=False)
    tok.train_from_iterator(["hello world, hello there 12"] * 4, trainer)
    tok.add_tokens(_gguf_models.USER_DEFINED)
    return tok


def gguf_seeds() -> Dict[str, bytes]:
    import torch
    import transformers

    variants = [
        # name, architecture, hidden (quantized rows need whole 32-value blocks), type, pre, extras
        ("llama-q4_1-h32", "llama", 32, "Q4_1", "smollm", {}),
        ("llama-q8_0-h32-bos", "llama", 32, "Q8_0", "llama-bpe", {"add_bos": True}),
        ("qwen2-f32-tied", "qwen2", 8, "F32", "qwen2", {"tie": True}),
        ("llama-f16-llama3", "llama", 8, "F16", "smollm", {"rope": LLAMA3_ROPE}),
    ]
    seeds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, arch, hidden, qtype, pre, extras) in enumerate(variants):
            tok = tiny_bpe(pre, 40)
            vocab = tok.get_vocab_size(with_added_tokens=True)
            kwargs = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          max_position_embeddings=32,
                          tie_word_embeddings=extras.get("tie", False))
            if "rope" in extras:
                kwargs["rope_parameters"] = dict(extras["rope"])
            torch.manual_seed(10 + i)
            config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}
            model_class = {"llama": transformers.LlamaForCausalLM,
                           "qwen2": transformers.Qwen2ForCausalLM}
            model = model_class[arch](config_class[arch](**kwargs))
            arch_name, meta, tensors = _gguf_models.convert(
                model, tok, qtype, pre, add_bos=extras.get("add_bos", False))
            path = _gguf_models.write_gguf(Path(tmp) / f"{name}.gguf", arch_name, meta, tensors)
            seeds[name] = path.read_bytes()
    return seeds


# ----------------------------------------------------------------------------- PEFT adapters


def adapter_seeds(tmp: Path, base: Path) -> Dict[str, bytes]:
    variants = [
        ("lora-qv-down", dict(targets=("q_proj", "v_proj", "down_proj")), {}),
        ("lora-embed-lm_head", dict(targets=("embed_tokens", "lm_head", "o_proj")), {}),
        ("lora-patterns-modules_to_save",
         dict(targets=("k_proj", "gate_proj", "up_proj"), modules_to_save=["lm_head"]),
         {"use_rslora": True, "rank_pattern": {"k_proj": 2}, "alpha_pattern": {"up_proj": 3}}),
    ]
    seeds = {}
    for i, (name, kwargs, config_changes) in enumerate(variants):
        directory = _tiny_models.save_lora(base, tmp / "adapters" / name, seed=i, rank=2,
                                           **kwargs)
        config = json.loads((directory / "adapter_config.json").read_text())
        # The fuzz target's base is tests/fuzz/tiny-llama: the name check must pass.
        config.update(base_model_name_or_path="tiny-llama", **config_changes)
        files = {"adapter_config.json": json.dumps(config).encode(),
                 "adapter_model.safetensors": (directory / "adapter_model.safetensors")
                 .read_bytes()}
        seeds[name] = join_files(files, ADAPTER_FILES)
    return seeds


# -------------------------------------------------------------------------------- tokenizers


def tokenizer_seeds(base: Path) -> Dict[str, bytes]:
    from tokenizers import AddedToken

    word_level = {n: (base / n).read_bytes() for n in ("tokenizer.json",
                                                       "tokenizer_config.json")}
    seeds = {"word-level-chatml": join_files(word_level, TOKENIZER_FILES)}

    bpe = tiny_bpe("smollm", 40)
    bpe.add_special_tokens([AddedToken("<s>", special=True)])
    settings = {
        # Older files store special tokens as AddedToken objects.
        "eos_token": {"content": "<|im_end|>", "special": True, "__type": "AddedToken"},
        "bos_token": "<s>", "pad_token": None,
        "chat_template": [{"name": "default", "template": _gguf_models.CHATML},
                          {"name": "tool_use", "template": "{{ tools | tojson }}"}],
    }
    seeds["bpe-named-templates"] = join_files(
        {"tokenizer.json": bpe.to_str().encode(),
         "tokenizer_config.json": json.dumps(settings).encode()}, TOKENIZER_FILES)

    seeds["word-level-jinja-file"] = join_files(
        {"tokenizer.json": word_level["tokenizer.json"],
         "tokenizer_config.json": json.dumps({"eos_token": "<|im_end|>"}).encode(),
         "chat_template.jinja": RICH_TEMPLATE.encode()}, TOKENIZER_FILES)
    return seeds


# ------------------------------------------------------------------------- the core boundary


def call_seeds(calls: List[Any]) -> Dict[str, bytes]:
    """The boundary and stack targets read their input as choices (atheris.FuzzedDataProvider):
    the first byte picks the call, the rest its arguments. A few random byte strings per call."""
    rng = np.random.default_rng(0)
    seeds = {}
    for index, call in enumerate(calls):
        for j in range(3):
            body = rng.integers(0, 256, size=48 + 80 * j, dtype=np.uint8).tobytes()
            seeds[f"{call.__name__}-{j}"] = bytes([index]) + body
    return seeds


def boundary_seeds() -> Dict[str, bytes]:
    from fuzz_core_boundary import CALLS

    return call_seeds(CALLS)


def stack_seeds() -> Dict[str, bytes]:
    from fuzz_stack import CALLS

    return call_seeds(CALLS)


if __name__ == "__main__":
    main()
