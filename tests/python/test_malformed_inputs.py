"""Malformed inputs, all in one place: every broken file a user may point infermode at gives a
named Python exception whose message names the culprit (the file, and the tensor or field) and
says what is wrong — never a crash, a hang or a silent wrong answer — and leaves every file as it
was (size, mtime and content of each file in the directory, before and after).

Each case copies a valid tiny input (a Hugging Face checkpoint directory, a GGUF file, a PEFT
adapter directory), breaks one thing and loads it with ``CausalLM.from_pretrained``, as a user
would. The loaders' deeper tests (every header check, every config key) are in
test_checkpoints_hf.py, test_checkpoints_gguf.py and test_peft.py; this is the matrix of what a
user meets.
"""
import faulthandler
import hashlib
import json
import shutil
import struct

import gguf
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

import _gguf_models as gm
from infermode.llm import CausalLM

# A case that runs longer than this has hung: the process dies with every thread's traceback.
HANG_SECONDS = 120
WEIGHTS = "model.safetensors"
Q_PROJ = "model.layers.0.self_attn.q_proj.weight"  # (64, 64) in lora_base
NORM = "model.norm.weight"  # (64,)
ADAPTER_WEIGHTS = "adapter_model.safetensors"
A_KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"  # (4, 64)


@pytest.fixture(autouse=True)
def _no_hang():
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _snapshot(*directories):
    """Every file under the directories: (size, mtime_ns, sha256)."""
    return {path: (path.stat().st_size, path.stat().st_mtime_ns,
                   hashlib.sha256(path.read_bytes()).hexdigest())
            for directory in directories for path in sorted(directory.rglob("*"))
            if path.is_file()}


def _refused(load, directories, error, culprits):
    """``load()`` raises ``error`` whose message holds every culprit; no file changed."""
    before = _snapshot(*directories)
    with pytest.raises(error) as raised:
        load()
    message = str(raised.value)
    for culprit in culprits:
        assert str(culprit) in message, f"{culprit!r} not in: {message}"
    assert _snapshot(*directories) == before


# ------------------------------------------------------------------------------ safetensors


def _edit_tensors(edit, file_name=WEIGHTS):
    """Rewrites the tensors of ``file_name`` (in the directory the case gets) after ``edit``."""
    def apply(directory):
        path = directory / file_name
        tensors = safetensors.numpy.load_file(str(path))
        edit(tensors)
        safetensors.numpy.save_file(tensors, str(path))
    return apply


def _edit_header(edit):
    """Rewrites the JSON header of model.safetensors, keeping the data section as it is."""
    def apply(directory):
        path = directory / WEIGHTS
        data = path.read_bytes()
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + length])
        edit(header)
        raw = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length:])
    return apply


def _truncate(keep):
    def apply(directory):
        path = directory / WEIGHTS
        data = path.read_bytes()
        path.write_bytes(data[:keep(len(data))])
    return apply


def _past_the_end(header):
    begin, end = header[NORM]["data_offsets"]
    header[NORM]["data_offsets"] = [begin + 10**9, end + 10**9]


SAFETENSORS_CASES = {
    "truncated_in_the_data": (_truncate(lambda n: n // 2), ["ends at byte", "truncated"]),
    "truncated_in_the_header": (_truncate(lambda n: 20),
                                ["header says its JSON ends at byte", "has 20 bytes"]),
    "offsets_past_the_end": (_edit_header(_past_the_end), [repr(NORM), "ends at byte 100"]),
    "wrong_shape_for_its_name": (
        _edit_tensors(lambda t: t.update({Q_PROJ: np.zeros((64, 32), np.float32)})),
        [repr(Q_PROJ), "shape (64, 32)", "expected (64, 64)"]),
    "int32_weights": (
        _edit_tensors(lambda t: t.update({Q_PROJ: np.zeros((64, 64), np.int32)})),
        [repr(Q_PROJ), "dtype int32", "float32, float16, bfloat16"]),
    "uint8_norm": (_edit_tensors(lambda t: t.update({NORM: np.zeros(64, np.uint8)})),
                   [repr(NORM), "dtype uint8"]),
    "float64_weights": (
        _edit_tensors(lambda t: t.update({Q_PROJ: np.zeros((64, 64), np.float64)})),
        [repr(Q_PROJ), "dtype float64"]),
}


@pytest.mark.parametrize("case", list(SAFETENSORS_CASES))
def test_broken_safetensors(lora_base, tmp_path, case):
    edit, culprits = SAFETENSORS_CASES[case]
    directory = shutil.copytree(lora_base, tmp_path / "ckpt")
    edit(directory)
    _refused(lambda: CausalLM.from_pretrained(directory), [directory], ValueError,
             [directory / WEIGHTS, *culprits])


# ------------------------------------------------------------------------------ config.json

REQUIRED = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "max_position_embeddings")


def _set(**values):
    return lambda config: config.update(values)


def _not_divisible(config):
    config.pop("head_dim")
    config["hidden_size"] = 66


CONFIG_CASES = {
    **{f"missing_{key}": (lambda c, key=key: c.pop(key), [f"required key {key!r} is missing"])
       for key in REQUIRED},
    "string_for_an_int": (_set(hidden_size="64"), ["'hidden_size' must be an int, got '64'"]),
    "float_for_an_int": (_set(num_hidden_layers=3.0), ["'num_hidden_layers' must be an int"]),
    "bool_for_an_int": (_set(num_attention_heads=True), ["'num_attention_heads' must be an int"]),
    "string_for_a_bool": (_set(tie_word_embeddings="false"),
                          ["'tie_word_embeddings' must be a bool"]),
    "string_for_a_number": (_set(rms_norm_eps="1e-6"), ["'rms_norm_eps' must be a number"]),
    "string_for_a_token_id": (_set(bos_token_id="1"), ["'bos_token_id' must be an int"]),
    "list_for_rope_parameters": (_set(rope_parameters=[1]), ["'rope_parameters' must be an obj"]),
    "negative_vocab_size": (_set(vocab_size=-96), ["vocab_size must be a positive int, got -96"]),
    "negative_intermediate_size": (_set(intermediate_size=-1), ["intermediate_size must be a pos"]),
    "zero_heads": (_set(num_attention_heads=0), ["num_attention_heads must be a positive int"]),
    "zero_kv_heads": (_set(num_key_value_heads=0), ["num_key_value_heads must be a positive"]),
    "hidden_not_divisible_by_heads": (_not_divisible, ["hidden_size (66) is not divisible by "
                                                       "num_attention_heads (4)", "head_dim"]),
    "heads_not_a_multiple_of_kv_heads": (_set(num_key_value_heads=3),
                                         ["num_attention_heads (4)", "num_key_value_heads (3)"]),
    "odd_head_dim": (_set(head_dim=15), ["head_dim must be even"]),
    "negative_eps": (_set(rms_norm_eps=-1e-6), ["rms_norm_eps must be a positive finite"]),
    "eps_beyond_float32": (_set(rms_norm_eps=1e300), ["rms_norm_eps", "float32"]),
    "nan_rope_theta": (lambda c: c["rope_parameters"].update(rope_theta=float("nan")),
                       ["rope_theta must be a positive finite number"]),
    "huge_context": (_set(max_position_embeddings=10**20),
                     ["max_position_embeddings is 100000000000000000000"]),
    # 10**9 layers once built a billion tensor names before the first was missed: a hang.
    "huge_layer_count": (_set(num_hidden_layers=10**9),
                         ["num_hidden_layers is 1000000000", "holds 3 block(s)"]),
    "fewer_layers_than_the_weights": (_set(num_hidden_layers=2),
                                      ["num_hidden_layers is 2", "holds 3 block(s)"]),
    "eos_outside_the_vocabulary": (_set(eos_token_id=4096),
                                   ["eos_token_id 4096 is outside the vocabulary"]),
    "unsupported_model_type": (_set(model_type="gpt2"), ["'gpt2' is not supported"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_broken_config_json(lora_base, tmp_path, case):
    edit, culprits = CONFIG_CASES[case]
    directory = shutil.copytree(lora_base, tmp_path / "ckpt")
    path = directory / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    _refused(lambda: CausalLM.from_pretrained(directory), [directory], ValueError,
             [path, *culprits])


@pytest.mark.parametrize("text, culprit", [("[1, 2]", "expected a JSON object, got list"),
                                           ('{"model_type": ', "is not valid JSON")])
def test_config_json_that_is_no_config(lora_base, tmp_path, text, culprit):
    directory = shutil.copytree(lora_base, tmp_path / "ckpt")
    (directory / "config.json").write_text(text)
    _refused(lambda: CausalLM.from_pretrained(directory), [directory], ValueError,
             [directory / "config.json", culprit])


# ------------------------------------------------------------------------------------- GGUF


@pytest.fixture(scope="module")
def gguf_model():
    """(transformers model, tokenizer): a tiny Llama to write as GGUF, Q8_0 matrices."""
    tok = gm.train_tokenizer("smollm")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256)
    return transformers.LlamaForCausalLM(config).eval(), tok


def _patch_type(name, code):
    """Overwrites the GGML type code of tensor ``name`` in the file's tensor table (its data
    stays as written)."""
    def apply(path):
        reader = gguf.GGUFReader(path)
        field = next(t.field for t in reader.tensors if t.name == name)
        # A tensor-info entry: name length, name, n_dims, dims, type (u32), offset.
        at = field.offset + sum(int(part.nbytes) for part in field.parts[:4])
        del reader, field  # the file is rewritten below: no view of it may stay mapped
        data = bytearray(path.read_bytes())
        data[at:at + 4] = struct.pack("<I", code)
        path.write_bytes(bytes(data))
    return apply


def _metadata(key, value):
    return lambda meta, tensors: meta.update({key: value})


def _requantized(name, qtype):
    """Tensor ``name`` stored as ``qtype`` instead of Q8_0."""
    def edit(meta, tensors):
        blocks, stored = tensors[name]
        values = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[stored])
        tensors[name] = gm._stored(values, qtype)
    return edit


def _int32_matrix(meta, tensors):
    tensors["blk.0.ffn_up.weight"] = (np.zeros((128, 64), np.int32), "I32")  # (ffn, hidden)


# Written by gguf.GGUFWriter after an edit of (metadata, tensors), or patched in the written file.
GGUF_WRITTEN = {
    "type_unsupported_for_a_matrix": (_int32_matrix, ["'blk.0.ffn_up.weight' has type I32",
                                                      "supported: F32"]),
    "quantized_type_not_supported": (_requantized("blk.1.ffn_gate.weight", "Q5_0"),
                                     ["'blk.1.ffn_gate.weight' has type Q5_0"]),
    "huge_block_count": (_metadata("llama.block_count", 10**9),
                         ["'llama.block_count' is 1000000000", "holds 2 block(s)"]),
    "wrong_shape_for_its_name": (
        lambda meta, tensors: tensors.update(
            {"blk.0.attn_k.weight": (np.zeros((16, 64), np.float32), "F32")}),
        ["'blk.0.attn_k.weight' has shape (16, 64)", "expected (32, 64)"]),
}
GGUF_PATCHED = {
    "unknown_tensor_type": (_patch_type("blk.0.ffn_up.weight", 200),
                            ["'blk.0.ffn_up.weight' has GGML type 200, which is no known type"]),
    "q8_0_recorded_as_q4_0": (_patch_type("blk.0.ffn_up.weight", gguf.GGMLQuantizationType.Q4_0),
                              ["'blk.0.ffn_up.weight' (Q4_0", "does not match its data"]),
    "q8_0_recorded_as_f16": (_patch_type("blk.0.ffn_up.weight", gguf.GGMLQuantizationType.F16),
                             ["'blk.0.ffn_up.weight' (F16", "does not match its data"]),
    "f32_norm_recorded_as_f16": (
        _patch_type("blk.0.attn_norm.weight", gguf.GGMLQuantizationType.F16),
        ["'blk.0.attn_norm.weight' (F16", "does not match its data"]),
    "last_tensor_recorded_as_q4_0": (
        _patch_type("output.weight", gguf.GGMLQuantizationType.Q4_0),
        ["'output.weight' (Q4_0", "belong to no tensor"]),
    "last_tensor_recorded_as_f32": (
        _patch_type("output.weight", gguf.GGMLQuantizationType.F32),
        ["'output.weight' (F32", "truncated"]),
    "type_with_blocks_wider_than_a_row": (
        _patch_type("blk.0.ffn_up.weight", gguf.GGMLQuantizationType.Q5_K),
        ["'blk.0.ffn_up.weight' has rows of 64 values", "Q5_K blocks of 256"]),
    "truncated": (lambda path: path.write_bytes(path.read_bytes()[:-5000]),
                  ["'output.weight'", "truncated"]),
}


@pytest.mark.parametrize("case", [*GGUF_WRITTEN, *GGUF_PATCHED])
def test_broken_gguf(gguf_model, tmp_path, case):
    model, tok = gguf_model
    arch, meta, tensors = gm.convert(model, tok, "Q8_0", pre="smollm")
    if case in GGUF_WRITTEN:
        edit, culprits = GGUF_WRITTEN[case]
        edit(meta, tensors)
    path = gm.write_gguf(tmp_path / "model.gguf", arch, meta, tensors)
    if case in GGUF_PATCHED:
        patch, culprits = GGUF_PATCHED[case]
        patch(path)
    _refused(lambda: CausalLM.from_pretrained(path), [tmp_path], ValueError, [path, *culprits])


def test_the_unbroken_gguf_loads(gguf_model, tmp_path):
    """The cases above break one thing each in a file that loads."""
    model, tok = gguf_model
    path = gm.write_gguf(tmp_path / "model.gguf", *gm.convert(model, tok, "Q8_0", pre="smollm"))
    assert CausalLM.from_pretrained(path).generate([[1, 2, 3]], max_new_tokens=2).token_ids


# ------------------------------------------------------------------------------ adapters


def _adapter_config(**values):
    def apply(directory):
        path = directory / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **values}))
    return apply


def _rename(tensors):
    tensors[A_KEY.replace("q_proj", "qkv_proj")] = tensors.pop(A_KEY)
    tensors[A_KEY.replace("q_proj", "qkv_proj").replace("lora_A", "lora_B")] = tensors.pop(
        A_KEY.replace("lora_A", "lora_B"))


ADAPTER_CASES = {
    "another_base_model": (
        _adapter_config(base_model_name_or_path="meta-llama/Llama-3.2-1B"),
        ["trained on base model 'meta-llama/Llama-3.2-1B'", "check_base_model=False"]),
    "shapes_of_another_model_size": (
        _edit_tensors(lambda t: t.update({A_KEY: np.zeros((4, 32), np.float32)}),
                      ADAPTER_WEIGHTS),
        ["'model.layers.0.self_attn.q_proj' has A (4, 32)", "needs A (4, 64)"]),
    "rank_other_than_its_config": (_adapter_config(r=8), ["expected rank 8"]),
    "module_the_base_lacks": (_edit_tensors(_rename, ADAPTER_WEIGHTS),
                              ["'model.layers.0.self_attn.qkv_proj'", "does not have"]),
    "int32_factors": (
        _edit_tensors(lambda t: t.update({A_KEY: np.zeros((4, 64), np.int32)}), ADAPTER_WEIGHTS),
        [repr(A_KEY), "dtype int32"]),
    "string_for_the_rank": (_adapter_config(r="four"), ["field 'r' is 'four'"]),
    "truncated_weights": (
        lambda d: (d / ADAPTER_WEIGHTS).write_bytes((d / ADAPTER_WEIGHTS).read_bytes()[:-64]),
        [ADAPTER_WEIGHTS, "truncated"]),
}


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "unmerged"])
@pytest.mark.parametrize("case", list(ADAPTER_CASES))
def test_broken_adapter(lora_base, lora_adapter, tmp_path, case, merge):
    edit, culprits = ADAPTER_CASES[case]
    adapter = shutil.copytree(lora_adapter, tmp_path / "adapter")
    edit(adapter)
    _refused(lambda: CausalLM.from_pretrained(lora_base, adapter=adapter, merge=merge),
             [adapter, lora_base], ValueError, [adapter, *culprits])
