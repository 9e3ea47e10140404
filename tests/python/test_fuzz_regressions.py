"""Inputs that fuzzing (tests/fuzz, scripts/fuzz) or writing its targets showed to crash, hang,
leak an unnamed exception or answer wrongly, each now refused with a named error. The exact
crash inputs are kept in tests/fuzz/regressions/<target>/ and replayed through their targets by
the last test."""
import contextlib
import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import infermode
from infermode import _core, ops

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
TINY_LLAMA = FUZZ / "tiny-llama"
REGRESSIONS = FUZZ / "regressions"

sys.path.insert(0, str(FUZZ))
from _harness import ADAPTER_FILES, split_files  # noqa: E402 - the fuzz targets' input layout


@pytest.fixture
def checkpoint(tmp_path):
    """A copy of the fuzz targets' tiny Llama (config, weights, word-level tokenizer, ChatML)."""
    return Path(shutil.copytree(TINY_LLAMA, tmp_path / "tiny-llama"))


@pytest.fixture(scope="module")
def model():
    return infermode.CausalLM.from_pretrained(TINY_LLAMA, threads=1)


def snapshot(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@contextlib.contextmanager
def refused(directory, match):
    """Expects a ValueError matching ``match``, and no file of ``directory`` changed (readers
    never write)."""
    before = snapshot(directory)
    with pytest.raises(ValueError, match=match):
        yield
    assert snapshot(directory) == before


# ----------------------------------------------------------------------- Hugging Face directories


def test_chat_template_file_that_is_not_utf8_is_named(checkpoint):
    # fuzz_tokenizer: chat_template.jinja with a byte that is not UTF-8 leaked UnicodeDecodeError.
    (checkpoint / "chat_template.jinja").write_bytes(b"{{ messages }}\x8c")
    with refused(checkpoint, r"chat_template\.jinja is not UTF-8 text"):
        infermode.CausalLM.from_pretrained(checkpoint)


def test_named_chat_template_with_a_list_for_a_name_is_named(checkpoint):
    # Seen writing fuzz_tokenizer: a "name" that is not a string leaked TypeError (unhashable).
    settings = {"chat_template": [{"name": ["default"], "template": "x"}]}
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(settings))
    with refused(checkpoint, "tokenizer_config.json: 'chat_template' must be"):
        infermode.CausalLM.from_pretrained(checkpoint)


@pytest.mark.parametrize("name", ["config.json", "generation_config.json",
                                  "tokenizer_config.json"])
def test_json_nested_too_deeply_is_named(checkpoint, name):
    # json raises RecursionError, not a ValueError, on arrays nested past the recursion limit.
    (checkpoint / name).write_text("[" * 100_000)
    with refused(checkpoint, rf"{name} is not valid JSON: it nests"):
        infermode.CausalLM.from_pretrained(checkpoint)


def test_safetensors_header_nested_too_deeply_is_named(checkpoint):
    header = b"[" * 100_000
    (checkpoint / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with refused(checkpoint, r"model\.safetensors: the header is not valid JSON"):
        infermode.CausalLM.from_pretrained(checkpoint)


def test_safetensors_dtype_that_is_a_list_is_named(checkpoint):
    # fuzz_hf_checkpoint: "dtype": ["F32"] leaked TypeError (unhashable) from the dtype lookup.
    data = (checkpoint / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    header["model.norm.weight"]["dtype"] = ["F32"]
    raw = json.dumps(header).encode()
    (checkpoint / "model.safetensors").write_bytes(
        struct.pack("<Q", len(raw)) + raw + data[8 + header_len:])
    with refused(checkpoint, r"model\.safetensors: tensor 'model\.norm\.weight' has "
                             r"dtype \['F32'\]"):
        infermode.CausalLM.from_pretrained(checkpoint)


@pytest.mark.parametrize("template, error", [
    ("{{ +messages }}", "TypeError: bad operand type for unary"),
    ("{{ messages[9] | tojson }}", "TypeError: Object of type Undefined"),
    ("{% set a, b = namespace() %}", "TypeError: cannot unpack"),
    ("{{ " + "[" * 3000 + "]" * 3000 + " }}", "RecursionError"),
])
def test_chat_template_that_fails_in_python_is_a_value_error(checkpoint, template, error):
    # fuzz_tokenizer: a template is a program, and only Jinja's own TemplateError was turned into
    # a ValueError; an operator on the wrong values, or nesting too deep to parse, leaked.
    (checkpoint / "chat_template.jinja").write_text(template)
    model = infermode.CausalLM.from_pretrained(checkpoint)
    with pytest.raises(ValueError, match=f"the chat template failed: {error}"):
        model.apply_chat_template([{"role": "user", "content": "hello"}])


def test_config_with_billions_of_blocks_is_refused_at_once(checkpoint):
    # fuzz_core_boundary (the same config in C++): listing every block's tensor names before
    # checking any ran out of memory. The block count is now checked against the tensors first.
    config = json.loads((checkpoint / "config.json").read_text())
    config["num_hidden_layers"] = 2**31 - 1
    (checkpoint / "config.json").write_text(json.dumps(config))
    started = time.monotonic()
    with refused(checkpoint, r"config\.json: num_hidden_layers is 2147483647, but "
                             r"model\.safetensors holds 1 block\(s\)"):
        infermode.CausalLM.from_pretrained(checkpoint)
    assert time.monotonic() - started < 10


def test_tokenizer_that_cannot_encode_is_a_value_error(checkpoint):
    # fuzz_tokenizer: a WordLevel tokenizer whose unk_token is not in its vocabulary loads, then
    # its encode() raised a bare Exception from the Rust side.
    tokenizer = json.loads((checkpoint / "tokenizer.json").read_text())
    tokenizer["model"]["unk_token"] = "[UNK]"
    (checkpoint / "tokenizer.json").write_text(json.dumps(tokenizer))
    model = infermode.CausalLM.from_pretrained(checkpoint)
    with pytest.raises(ValueError, match="tokenizer cannot encode prompt 0: .*UNK"):
        model.generate("hello world", max_new_tokens=1)
    with pytest.raises(ValueError, match="tokenizer cannot encode the rendered conversation"):
        model.apply_chat_template([{"role": "user", "content": "hello"}])


# ------------------------------------------------------------------------------------------ GGUF


CORRUPT = r"model\.gguf is not a valid GGUF file \(truncated or corrupt\?\): "


def gguf_with(tmp_path, patch, seed="qwen2-f32-tied"):
    """A seed GGUF file of the fuzz corpus with ``patch(data: bytearray)`` applied."""
    data = bytearray((FUZZ / "corpus" / "gguf" / seed).read_bytes())
    patch(data)
    path = tmp_path / "model.gguf"
    path.write_bytes(bytes(data))
    return path


def value_offset(data, key):
    """Where the value of metadata ``key`` starts (after its u32 type)."""
    return data.index(key.encode()) + len(key) + 4


def test_gguf_array_longer_than_the_file_is_refused_quickly(tmp_path):
    # fuzz_gguf: an array count near 2**63 made the gguf package's reader loop past the end of
    # the file, where each element takes no bytes, until memory ran out.
    def patch(data):
        count_at = value_offset(data, "tokenizer.ggml.token_type") + 4
        data[count_at:count_at + 8] = struct.pack("<Q", 8391438856702815006)

    path = gguf_with(tmp_path, patch)
    started = time.monotonic()
    with refused(tmp_path, CORRUPT + r"8391438856702815006 elements of metadata "
                           r"'tokenizer\.ggml\.token_type'"):
        infermode.CausalLM.from_pretrained(path)
    assert time.monotonic() - started < 10


def test_gguf_tensor_count_larger_than_the_file_is_refused(tmp_path):
    def patch(data):
        data[8:16] = struct.pack("<Q", 2**60)

    path = gguf_with(tmp_path, patch)
    with refused(tmp_path, CORRUPT + "1152921504606846976 tensor infos"):
        infermode.CausalLM.from_pretrained(path)


def test_gguf_metadata_string_that_is_not_utf8_is_named(tmp_path):
    # fuzz_gguf: the chat template with a byte that is not UTF-8 leaked UnicodeDecodeError from
    # the reader, which decodes strings when they are read.
    def patch(data):
        start = value_offset(data, "tokenizer.chat_template") + 8
        data[start + 3] = 0x85

    path = gguf_with(tmp_path, patch)
    with refused(tmp_path, r"metadata 'tokenizer\.chat_template' cannot be read: "
                           "UnicodeDecodeError"):
        infermode.CausalLM.from_pretrained(path)


def test_gguf_merge_of_tokens_missing_from_the_vocabulary_is_named(tmp_path):
    # fuzz_gguf: the tokenizers library refused the merge with a bare Exception.
    def patch(data):
        merge = struct.pack("<Q", 3) + b"h e"
        start = data.index(merge) + 8
        data[start] = ord("Q")

    path = gguf_with(tmp_path, patch)
    with refused(tmp_path, r"model\.gguf: the tokenizer its metadata describes "
                           r"cannot be built: .*Token `Q` out of vocabulary"):
        infermode.CausalLM.from_pretrained(path)


def test_gguf_rope_factors_below_one_are_named(tmp_path):
    # fuzz_gguf: factors whose largest is exactly 1 (the others below) divided by zero fitting a
    # Llama 3 rule to them.
    def patch(data):
        for old, new in ((1.7359413, 0.5), (8.0, 1.0)):
            at = data.index(struct.pack("<f", old))
            data[at:at + 4] = struct.pack("<f", new)

    path = gguf_with(tmp_path, patch, seed="llama-f16-llama3")
    with refused(tmp_path, r"tensor 'rope_freqs\.weight'.* follow no Llama 3 "
                           r"scaling rule \(they must lie between 1 and a factor "
                           r"above 1; they range from 0\.5 to 1\.0\)"):
        infermode.CausalLM.from_pretrained(path)


# ---------------------------------------------------------------------------------- adapters


@pytest.fixture
def adapter(tmp_path):
    """An adapter for the tiny Llama (a seed of fuzz_peft_adapter's corpus), as a directory."""
    seed = (FUZZ / "corpus" / "peft_adapter" / "lora-patterns-modules_to_save").read_bytes()
    directory = tmp_path / "adapter"
    directory.mkdir()
    for name, content in split_files(seed, ADAPTER_FILES).items():
        (directory / name).write_bytes(content)
    return directory


def edit_adapter_config(directory, **changes):
    config = json.loads((directory / "adapter_config.json").read_text())
    config.update(changes)
    (directory / "adapter_config.json").write_text(json.dumps(config))


def test_adapter_rank_pattern_that_is_not_a_regex_is_named(adapter):
    # fuzz_peft_adapter: the key is a regular expression; an unbalanced one leaked re.error.
    edit_adapter_config(adapter, rank_pattern={"k_proj)": 2})
    with refused(adapter, r"rank_pattern/alpha_pattern key 'k_proj\)' is not a "
                          "regular expression: unbalanced parenthesis"):
        infermode.CausalLM.from_pretrained(TINY_LLAMA, adapter=adapter)


@pytest.mark.parametrize("alpha", [float("inf"), float("nan")])
def test_adapter_lora_alpha_that_is_not_finite_is_named(adapter, alpha):
    # Seen reading peft.py while fuzzing it: Python's JSON reads Infinity and NaN, and merging
    # scaled the update into NaN weights without a word.
    edit_adapter_config(adapter, lora_alpha=alpha)
    with refused(adapter, f"lora_alpha is {alpha}, expected a finite number"):
        infermode.CausalLM.from_pretrained(TINY_LLAMA, adapter=adapter)


# ------------------------------------------------------------------------------ token ids


@pytest.mark.parametrize("ids", [[[np.inf]], [[1.7, 2.0]], np.array([[1.7, 2.2]]), [[True]]])
def test_generate_refuses_ids_that_are_not_ints(model, ids):
    # fuzz_core_boundary: float ids leaked OverflowError (inf) or were truncated to other tokens.
    with pytest.raises(TypeError, match="not an int token id|must be integers"):
        model.generate(ids, max_new_tokens=1)


def test_a_broadcast_prompt_of_billions_of_ids_is_refused_at_once(model):
    # fuzz_core_boundary: a broadcast array (no memory) of 2**31 ids hung in generate, converting
    # it to a list, and in forward, scanning it for bad ids and copying it (8 GB).
    ids = np.broadcast_to(np.zeros((1, 1), np.int64), (1, 2**31 + 1))
    started = time.monotonic()
    with pytest.raises(ValueError, match="exceeds the model's context of 64 positions"):
        model.generate(ids, max_new_tokens=1)
    with pytest.raises(ValueError, match="2147483649 tokens per row, more than the model's "
                                         "context of 64 positions"):
        model.forward(ids)
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------- the Python -> C++ boundary


def run_isolated(code):
    """Runs ``code`` in a new interpreter, so that a regression to a crash fails this test
    instead of killing pytest."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_absurd_thread_counts_are_refused_not_a_segfault():
    # fuzz_core_boundary: threads=200000 segfaulted inside libgomp (GOMP_parallel).
    done = run_isolated(
        "import numpy as np, infermode as im\n"
        "a = np.ones((64, 64), np.float32)\n"
        "try:\n"
        "    im.ops.matmul(a, a, threads=200000)\n"
        "except ValueError as e:\n"
        "    print(e)\n")
    assert done.returncode == 0, done.stderr
    assert "threads=200000 is more than the 1024 threads infermode runs at most" in done.stdout


def test_set_num_threads_refuses_absurd_counts():
    with pytest.raises(ValueError, match="n=5000 is more than the 1024"):
        _core.set_num_threads(5000)


@pytest.mark.parametrize("call", [
    lambda x: ops.rms_norm(x, np.ones(3, np.float32)),
    lambda x: ops.matmul(x, np.ones((3, 2), np.float32)),
    lambda x: ops.sum(x),
])
def test_arrays_in_the_other_byte_order_are_refused(call):
    # Seen writing fuzz_core_boundary's NumPy oracle: big-endian float32 has float32's kind and
    # size, and was read as little-endian: silently wrong results.
    x = np.arange(6, dtype=">f4").reshape(2, 3)
    with pytest.raises(TypeError, match=r"has dtype >f4, in the byte order this machine does "
                                        "not use"):
        call(x)


def test_quantize_refuses_what_is_not_a_float_matrix_before_copying_it():
    # fuzz_core_boundary: a complex matrix was quantized without its imaginary part, and a
    # broadcast vector of 2**31 values was copied (8 GB) before its dims were checked.
    with pytest.raises(TypeError, match="w has dtype complex64; pass a float array"):
        ops.quantize(np.ones((2, 32), np.complex64), "q8_0")
    started = time.monotonic()
    with pytest.raises(ValueError, match="w must be 2-d"):
        ops.quantize(np.broadcast_to(np.float32(0), (2**31,)), "q8_0")
    assert time.monotonic() - started < 1


def test_decoder_with_billions_of_blocks_is_refused_at_once(model):
    # fuzz_core_boundary: num_hidden_layers=2**31-1 listed every block's tensor names first and
    # ran out of memory.
    config = infermode.llm._core_config(model.config)
    config["num_hidden_layers"] = 2**31 - 1
    tensors = {n: np.ascontiguousarray(a, np.float32)
               for n, a in model._checkpoint.weights.items()}
    with pytest.raises(ValueError, match="2147483647 blocks, but only 12 tensors are given"):
        _core.Decoder(config, tensors)


def test_decoder_config_sizes_that_overflow_are_refused(model):
    config = infermode.llm._core_config(model.config)
    config.update(num_attention_heads=2**62, num_key_value_heads=2**62)
    with pytest.raises(ValueError, match="heads is 4611686018427387904, more than any model"):
        _core.Decoder(config, {})


@pytest.mark.parametrize("eps", [-1.0, float("inf"), float("nan")])
def test_decoder_with_an_rms_norm_eps_no_norm_takes_is_refused_when_built(model, eps):
    # fuzz_core_boundary (the long run): the Decoder was built, and its first forward pass
    # refused the eps; a model that is built must run.
    config = dict(infermode.llm._core_config(model.config), rms_norm_eps=eps)
    tensors = {n: np.ascontiguousarray(a, np.float32)
               for n, a in model._checkpoint.weights.items()}
    with pytest.raises(ValueError, match="rms_norm_eps must be finite and >= 0"):
        _core.Decoder(config, tensors)


def test_generate_checks_its_arguments_before_allocating_capture_buffers(model):
    # max_new_tokens=10**8 with a capture point allocated (and zeroed) 3 GB before the context
    # check refused it; 2**63-1 overflowed the check's sum.
    started = time.monotonic()
    for max_new in (10**8, 2**63 - 1):
        with pytest.raises(ValueError, match="exceeds the model's context of 64 positions"):
            model._model.generate([[0]], max_new, capture_points=[0])
    assert time.monotonic() - started < 5


def test_lora_bias_name_with_a_20_digit_block_index_is_a_value_error(model):
    # fuzz_core_boundary: the index overflowed std::stoll, whose out_of_range became IndexError.
    name = "model.layers.99999999999999999999.self_attn.k_proj.bias"
    with pytest.raises(ValueError, match="replaces the bias 'model.layers.9999"):
        _core.LoraAdapter(model._model, {}, {name: np.zeros(4, np.float32)})


# ------------------------------------------------------------------ the forecasters' stack


def _stack(norm_eps=1e-6, blocks=None):
    block = {"time_attention": True, "group_attention": False, "causal": True, "scaled": True,
             "attention_bias": False, "rope": "half_split", "rope_theta": 1e4,
             "xpos_scale_base": 512.0, "mlp": "swiglu", "mlp_bias": False}
    config = {"hidden": 8, "heads": 2, "head_dim": 4, "intermediate": 12, "norm_eps": norm_eps,
              "final_norm": False, "blocks": [block] if blocks is None else blocks}
    rng = np.random.default_rng(0)
    names = _core.TransformerStack.tensor_names(config) if blocks is None else []
    tensors = {n: rng.normal(size=shape).astype(np.float32) for n, shape in names}
    return _core.TransformerStack(config, tensors)


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), -1.0])
def test_stack_with_a_bad_norm_eps_is_refused_when_built(eps):
    # fuzz_stack: it was built, then refused by its first forward.
    with pytest.raises(ValueError, match="norm_eps must be finite and >= 0"):
        _stack(norm_eps=eps)


def test_stack_cache_sizes_that_overflow_64_bits_are_refused():
    # Writing the stack target: new_cache(2**62, 3) wrapped its size around 64 bits and
    # allocated a small buffer that forward would overrun; repeat() multiplied the same way.
    stack = _stack()
    for sequences, capacity in [(2**62, 3), (3, 2**62), (2**31 - 1, 2**31 - 1)]:
        with pytest.raises(ValueError, match="more elements than memory can address"):
            stack.new_cache(sequences, capacity)
    with pytest.raises(ValueError, match="must fit 64 bits"):
        stack.new_cache(2, 4).repeat(2**62)


@pytest.mark.parametrize("cache", ["cache", 3, np.zeros(3)])
def test_stack_forward_names_a_cache_of_the_wrong_kind(cache):
    # fuzz_stack: pybind's cast error (a RuntimeError without the argument's name).
    with pytest.raises(TypeError, match="cache must be a StackCache"):
        _stack().forward(np.zeros((1, 1, 8), np.float32), cache)


@pytest.mark.parametrize("blocks,match", [("blocks", "'blocks' must be a list of dicts"),
                                          ([1], r"blocks\[0\] must be a dict")])
def test_stack_config_blocks_of_the_wrong_kind_are_named(blocks, match):
    with pytest.raises(TypeError, match=match):
        _stack(blocks=blocks)


# ------------------------------------------------------------------- the crash inputs themselves


@pytest.mark.parametrize("target", sorted(p.name for p in REGRESSIONS.iterdir()))
def test_crash_inputs_replay_cleanly(target):
    """Every input a fuzz target crashed on, run once through that target (libFuzzer runs the
    files it is given and exits 0 if none crashes)."""
    inputs = sorted(str(p) for p in (REGRESSIONS / target).iterdir())
    done = subprocess.run([sys.executable, str(FUZZ / f"fuzz_{target}.py"), *inputs],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
