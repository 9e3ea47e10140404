"""checkpoints.hf: config.json in both generations, safetensors mapped without copying, the checks
on names and shapes, and tokenizers with chat templates — against files transformers wrote."""
import copy
import dataclasses
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
import transformers

from infermode.checkpoints import hf
from infermode.checkpoints.hf import (
    Checkpoint,
    ModelConfig,
    load_checkpoint,
    load_special_tokens,
    load_tokenizer,
    open_safetensors,
    render_chat,
    weight_names,
)

LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def _save(model, directory, **kwargs):
    model.save_pretrained(directory, **kwargs)
    return directory


@pytest.fixture(scope="session")
def llama(tmp_path_factory):
    """Llama with GQA and the llama3 RoPE scaling: (directory, model)."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=67, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rope_theta=500000.0, rope_scaling=dict(LLAMA3_SCALING), bos_token_id=1, eos_token_id=2,
    )
    model = transformers.LlamaForCausalLM(cfg)
    return _save(model, tmp_path_factory.mktemp("llama")), model


@pytest.fixture(scope="session")
def qwen(tmp_path_factory):
    """Qwen2 with q/k/v bias and tied embeddings: (directory, model)."""
    torch.manual_seed(1)
    cfg = transformers.Qwen2Config(
        vocab_size=67, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )
    model = transformers.Qwen2ForCausalLM(cfg)
    return _save(model, tmp_path_factory.mktemp("qwen")), model


@pytest.fixture(scope="session")
def qwen_sharded(tmp_path_factory, qwen):
    return _save(qwen[1], tmp_path_factory.mktemp("qwen_sharded"), max_shard_size="20KB")


@pytest.fixture(scope="session")
def llama_bf16(tmp_path_factory, llama):
    model = copy.deepcopy(llama[1]).to(torch.bfloat16)
    return _save(model, tmp_path_factory.mktemp("llama_bf16")), model


@pytest.fixture
def llama_copy(llama, tmp_path):
    """A private copy of the Llama checkpoint that a test may break."""
    return shutil.copytree(llama[0], tmp_path / "ckpt")


def _config_json(directory):
    return json.loads((directory / "config.json").read_text())


def _write_config(directory, cfg):
    (directory / "config.json").write_text(json.dumps(cfg))


def _snapshot(directory):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(directory.iterdir())}


# ------------------------------------------------------------------------------------- config


def test_config_from_transformers5_llama(llama):
    cfg = ModelConfig.from_json(llama[0])
    assert "rope_parameters" in _config_json(llama[0])  # what transformers 5 writes
    assert cfg.model_type == "llama"
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size) == (67, 32, 48)
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (2, 4, 2)
    assert cfg.head_dim == 8 and cfg.num_kv_groups == 2
    assert cfg.max_position_embeddings == 256
    assert cfg.rope_theta == 500000.0
    assert cfg.rope_scaling == LLAMA3_SCALING
    assert isinstance(cfg.rope_scaling["original_max_position_embeddings"], int)
    assert not cfg.tie_word_embeddings and not cfg.attention_bias and not cfg.mlp_bias
    assert cfg.bos_token_id == 1 and cfg.eos_token_ids == (2,)
    assert cfg.torch_dtype == "float32"


def test_config_from_transformers5_qwen2(qwen):
    cfg = ModelConfig.from_json(qwen[0] / "config.json")
    assert cfg.model_type == "qwen2"
    assert cfg.attention_bias and cfg.tie_word_embeddings
    assert cfg.rope_scaling is None and cfg.rope_theta == 10000.0
    assert cfg.head_dim == 8  # not in the file: hidden_size // num_attention_heads
    assert cfg.bos_token_id is None and cfg.eos_token_ids == ()


@pytest.mark.parametrize("type_key", ["rope_type", "type"])
def test_old_and_new_rope_keys_load_alike(llama, tmp_path, type_key):
    new = _config_json(llama[0])
    old = {k: v for k, v in new.items() if k not in ("rope_parameters", "dtype")}
    scaling = {k: v for k, v in LLAMA3_SCALING.items() if k != "rope_type"}
    old.update(rope_theta=500000.0, rope_scaling={type_key: "llama3", **scaling},
               torch_dtype="float32", eos_token_id=[2])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    assert ModelConfig.from_json(path) == ModelConfig.from_json(llama[0])


def test_default_rope_in_either_form_is_none(qwen):
    new = _config_json(qwen[0])
    old = {k: v for k, v in new.items() if k != "rope_parameters"}
    expected = ModelConfig.from_dict(new)
    assert ModelConfig.from_dict({**old, "rope_theta": 10000.0, "rope_scaling": None}) == expected
    assert ModelConfig.from_dict({**old, "rope_scaling": {"rope_type": "default"}}) == expected
    assert ModelConfig.from_dict(old).rope_theta == 10000.0  # the default when absent


def test_config_is_hashable_and_frozen(llama):
    cfg = ModelConfig.from_json(llama[0])
    assert {cfg: 1}[cfg] == 1
    with pytest.raises(AttributeError):
        cfg.hidden_size = 64


def test_eos_token_id_list_and_generation_config(llama_copy):
    cfg = _config_json(llama_copy)
    cfg["eos_token_id"] = [2, 3]
    _write_config(llama_copy, cfg)
    assert ModelConfig.from_json(llama_copy).eos_token_ids == (2, 3)
    # generate() stops on generation_config.json's ids too; the checkpoint carries them all.
    (llama_copy / "generation_config.json").write_text(json.dumps({"eos_token_id": [3, 7]}))
    assert load_checkpoint(llama_copy).config.eos_token_ids == (2, 3, 7)


@pytest.mark.parametrize(
    "edit, culprit",
    [
        (lambda c: c.pop("hidden_size"), "'hidden_size'"),
        (lambda c: c.pop("model_type"), "'model_type'"),
        (lambda c: c.update(num_hidden_layers="2"), "'num_hidden_layers'"),
        (lambda c: c.update(tie_word_embeddings=1), "'tie_word_embeddings'"),
        (lambda c: c.update(rms_norm_eps=True), "'rms_norm_eps'"),
        (lambda c: c.update(eos_token_id="</s>"), "'eos_token_id'"),
        (lambda c: c.update(num_key_value_heads=3), "num_key_value_heads"),
        (lambda c: c.update(head_dim=7), "head_dim"),
        (lambda c: c.update(vocab_size=0), "vocab_size"),
        (lambda c: c.update(hidden_act="gelu"), "hidden_act"),
        (lambda c: c.update(mlp_bias=True), "mlp_bias"),
        (lambda c: c.update(rope_parameters=[1]), "rope_parameters"),
        (lambda c: c["rope_parameters"].pop("factor"), "'factor'"),
        (lambda c: c["rope_parameters"].update(rope_theta="big"), "'rope_parameters.rope_theta'"),
    ],
)
def test_config_errors_name_the_key_and_file(llama, tmp_path, edit, culprit):
    cfg = _config_json(llama[0])
    edit(cfg)
    _write_config(tmp_path, cfg)
    with pytest.raises(ValueError) as err:
        ModelConfig.from_json(tmp_path)
    assert culprit in str(err.value)
    assert str(tmp_path / "config.json") in str(err.value)


def test_mlp_bias_is_not_supported(llama):
    cfg = ModelConfig.from_json(llama[0])
    with pytest.raises(ValueError, match="mlp_bias.*not supported"):
        dataclasses.replace(cfg, mlp_bias=True)


def test_unsupported_model_type_lists_supported(llama, tmp_path):
    cfg = _config_json(llama[0])
    cfg["model_type"] = "mistral"
    _write_config(tmp_path, cfg)
    with pytest.raises(ValueError) as err:
        ModelConfig.from_json(tmp_path)
    message = str(err.value)
    assert "'mistral'" in message
    assert all(t in message for t in hf.SUPPORTED_MODEL_TYPES)


@pytest.mark.parametrize("where", ["rope_parameters", "rope_scaling"])
def test_unsupported_rope_type_names_it_and_the_supported(llama, tmp_path, where):
    cfg = _config_json(llama[0])
    if where == "rope_scaling":
        cfg.pop("rope_parameters")
        cfg["rope_scaling"] = {"type": "yarn", "factor": 4.0}
    else:
        cfg["rope_parameters"] = {"rope_theta": 1e6, "rope_type": "yarn", "factor": 4.0}
    _write_config(tmp_path, cfg)
    with pytest.raises(ValueError) as err:
        ModelConfig.from_json(tmp_path)
    assert "'yarn'" in str(err.value) and "'llama3'" in str(err.value)


def test_config_json_that_is_not_json(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        ModelConfig.from_json(tmp_path)


def test_sliding_window_is_refused(qwen, tmp_path):
    cfg = _config_json(qwen[0])
    cfg["use_sliding_window"] = True
    _write_config(tmp_path, cfg)
    with pytest.raises(ValueError, match="use_sliding_window"):
        ModelConfig.from_json(tmp_path)


# ------------------------------------------------------------------------ names and weights


@pytest.mark.parametrize("which", ["llama", "qwen"])
def test_weight_names_match_what_transformers_saved(request, which):
    directory, model = request.getfixturevalue(which)
    with safetensors.safe_open(str(directory / "model.safetensors"), "pt") as f:
        saved = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    assert weight_names(ModelConfig.from_json(directory)) == saved


@pytest.mark.parametrize("which", ["llama", "qwen"])
def test_checkpoint_weights_equal_the_model(request, which):
    directory, model = request.getfixturevalue(which)
    ckpt = load_checkpoint(directory)
    assert isinstance(ckpt, Checkpoint) and ckpt.path == directory
    state = model.state_dict()
    assert set(ckpt.weights) == set(weight_names(ckpt.config))
    for name, array in ckpt.weights.items():
        assert ckpt.dtypes[name] == "float32" and array.dtype == np.float32
        np.testing.assert_array_equal(array, state[name].numpy())
    assert "lm_head.weight" not in ckpt.weights or not ckpt.config.tie_word_embeddings
    assert ckpt.nbytes == sum(a.nbytes for a in ckpt.weights.values())
    assert "weights" not in repr(ckpt)  # a repr never dumps the arrays


def test_weights_are_read_only_views_of_one_mapping(llama):
    ckpt = load_checkpoint(llama[0])
    a = ckpt.weights["model.embed_tokens.weight"]
    b = ckpt.weights["model.layers.1.mlp.down_proj.weight"]
    mapping = a.base
    assert isinstance(mapping, np.memmap) and b.base is mapping
    assert Path(mapping.filename).resolve() == (llama[0] / "model.safetensors").resolve()
    for view in (a, b):
        assert not view.flags.owndata and not view.flags.writeable
        assert np.shares_memory(view, mapping)
    with pytest.raises(ValueError):
        a[0, 0] = 1.0


def test_sharded_checkpoint_loads_like_the_single_file(qwen, qwen_sharded):
    assert (qwen_sharded / "model.safetensors.index.json").is_file()
    assert len(list(qwen_sharded.glob("*.safetensors"))) > 1
    single, sharded = load_checkpoint(qwen[0]), load_checkpoint(qwen_sharded)
    assert sharded.config == single.config and sharded.dtypes == single.dtypes
    assert sharded.weights.keys() == single.weights.keys()
    for name, array in single.weights.items():
        np.testing.assert_array_equal(sharded.weights[name], array)
    assert len({id(a.base) for a in sharded.weights.values()}) > 1  # one mapping per shard


def test_bf16_weights_are_uint16_bits_tagged_bfloat16(llama_bf16):
    directory, model = llama_bf16
    ckpt = load_checkpoint(directory)
    assert ckpt.config.torch_dtype == "bfloat16"
    state = model.state_dict()
    for name, array in ckpt.weights.items():
        assert ckpt.dtypes[name] == "bfloat16" and array.dtype == np.uint16
        np.testing.assert_array_equal(array.view(np.int16), state[name].view(torch.int16).numpy())


def test_loading_writes_nothing(llama, qwen_sharded, tokenizer_dir):
    directories = [llama[0], qwen_sharded, tokenizer_dir]
    before = [_snapshot(d) for d in directories]
    load_checkpoint(llama[0])
    load_checkpoint(qwen_sharded)
    load_tokenizer(tokenizer_dir)
    load_special_tokens(tokenizer_dir)
    assert [_snapshot(d) for d in directories] == before


def test_tied_checkpoint_may_store_lm_head(qwen, tmp_path):
    tensors = safetensors.numpy.load_file(str(qwen[0] / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    tensors["model.rotary_emb.inv_freq"] = np.ones(4, np.float32)  # old transformers' buffer
    safetensors.numpy.save_file(tensors, str(tmp_path / "model.safetensors"))
    shutil.copy(qwen[0] / "config.json", tmp_path)
    ckpt = load_checkpoint(tmp_path)
    assert "lm_head.weight" not in ckpt.weights and "model.rotary_emb.inv_freq" not in ckpt.weights


# ----------------------------------------------------------------------------- file errors


def test_missing_directory_or_a_file(llama, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(NotADirectoryError, match="config.json is not a directory"):
        load_checkpoint(llama[0] / "config.json")


def test_missing_config_json(llama_copy):
    (llama_copy / "config.json").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(llama_copy)
    assert str(llama_copy) in str(err.value) and "config.json" in str(err.value)


def test_missing_safetensors(llama_copy):
    (llama_copy / "model.safetensors").rename(llama_copy / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(llama_copy)
    message = str(err.value)
    assert str(llama_copy) in message and "model.safetensors" in message
    assert "pytorch_model.bin" in message  # says what it found instead


def test_missing_shard(qwen_sharded, tmp_path):
    directory = shutil.copytree(qwen_sharded, tmp_path / "ckpt")
    shard = sorted(directory.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        load_checkpoint(directory)


def test_truncated_file(llama_copy):
    path = llama_copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(ValueError) as err:
        load_checkpoint(llama_copy)
    message = str(err.value)
    assert str(path) in message
    assert f"but the file has {len(data) - 100} bytes" in message and "ends at byte" in message


def _crafted(path, header, data=b"", header_len=None):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
    return path


@pytest.mark.parametrize(
    "header, data, header_len, expected",
    [
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, None,
         "tensor 'w' ends at byte"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 12, None,
         "needs 16 bytes"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "v": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None,
         "overlaps"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None,
         "gap"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, None,
         "4 bytes belong to no tensor"),
        ({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, None,
         "dtype 'C64'"),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, None,
         "shape"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"\0" * 4, None,
         "data_offsets"),
        ({}, b"", 10**6, "header says its JSON ends at byte"),
        ({}, b"", 10**12, "not plausible"),
        ([1, 2], b"", None, "must be a JSON object"),
    ],
)
def test_corrupt_safetensors_headers(tmp_path, header, data, header_len, expected):
    path = _crafted(tmp_path / "bad.safetensors", header, data, header_len)
    with pytest.raises(ValueError) as err:
        open_safetensors(path)
    assert expected in str(err.value) and str(path) in str(err.value)


def test_header_that_is_not_json(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        open_safetensors(path)
    path.write_bytes(b"abc")
    with pytest.raises(ValueError, match="has 3 bytes"):
        open_safetensors(path)


def test_open_safetensors_every_dtype(tmp_path, rng):
    arrays = {
        "f64": rng.standard_normal((3, 5)),
        "f32": rng.standard_normal((7,)).astype(np.float32),
        "f16": rng.standard_normal((2, 3)).astype(np.float16),
        "i64": np.arange(5, dtype=np.int64),
        "i32": np.arange(6, dtype=np.int32).reshape(2, 3),
        "i8": np.array([-3, 4], np.int8),
        "u8": np.array([255, 0, 7], np.uint8),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(2.5, np.float32),
    }
    path = tmp_path / "all.safetensors"
    safetensors.numpy.save_file(arrays, str(path), metadata={"format": "np"})
    mapped = open_safetensors(path)
    assert set(mapped) == set(arrays) and mapped.metadata == {"format": "np"}
    for name, array in arrays.items():
        assert mapped[name].dtype == array.dtype and mapped[name].shape == array.shape
        np.testing.assert_array_equal(mapped[name], array)
    assert mapped.dtypes["f16"] == "float16" and mapped.dtypes["u8"] == "uint8"

    bf16 = torch.randn(3, 4).to(torch.bfloat16)
    safetensors.torch.save_file({"b": bf16}, str(tmp_path / "bf16.safetensors"))
    mapped = open_safetensors(tmp_path / "bf16.safetensors")
    assert mapped.dtypes["b"] == "bfloat16" and mapped["b"].dtype == np.uint16
    np.testing.assert_array_equal(mapped["b"].view(np.int16), bf16.view(torch.int16).numpy())
    with pytest.raises(KeyError, match="no tensor 'nope'"):
        mapped["nope"]


def _rewrite(directory, edit):
    path = directory / "model.safetensors"
    tensors = safetensors.numpy.load_file(str(path))
    edit(tensors)
    safetensors.numpy.save_file(tensors, str(path))
    return path


def test_wrong_shape_names_tensor_shapes_and_file(llama_copy):
    name = "model.layers.1.self_attn.k_proj.weight"
    path = _rewrite(llama_copy, lambda t: t.update({name: np.zeros((8, 32), np.float32)}))
    with pytest.raises(ValueError) as err:
        load_checkpoint(llama_copy)
    message = str(err.value)
    assert repr(name) in message and "(8, 32)" in message and "(16, 32)" in message
    assert str(path) in message


def test_missing_tensor_is_named(llama_copy):
    _rewrite(llama_copy, lambda t: t.pop("model.layers.0.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.mlp\.up_proj\.weight'.*missing"):
        load_checkpoint(llama_copy)


def test_unexpected_tensors_are_listed(llama_copy):
    def add(tensors):
        for i in range(7):
            tensors[f"model.layers.0.extra_{i}.weight"] = np.zeros(2, np.float32)

    _rewrite(llama_copy, add)
    with pytest.raises(ValueError) as err:
        load_checkpoint(llama_copy)
    assert "7 unexpected" in str(err.value) and "'model.layers.0.extra_0.weight'" in str(err.value)
    assert "and 2 more" in str(err.value)


def test_integer_weights_are_refused(llama_copy):
    name = "model.norm.weight"
    _rewrite(llama_copy, lambda t: t.update({name: np.zeros(32, np.int32)}))
    with pytest.raises(ValueError, match=r"'model\.norm\.weight'.*int32"):
        load_checkpoint(llama_copy)


# ------------------------------------------------------------------------ tokenizer and chat

CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHAT = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    import tokenizers
    from tokenizers import models, pre_tokenizers

    words = ["<unk>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant", "hello",
             "hi", "there", "You", "are", "helpful", "."]
    tok = tokenizers.Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, "<unk>"))
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    directory = tmp_path_factory.mktemp("tokenizer")
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": CHATML,
        "eos_token": {"content": "<|im_end|>", "special": True},
        "bos_token": None,
        "unk_token": "<unk>",
    }))
    return directory


def test_tokenizer_and_chat_template_round_trip(tokenizer_dir):
    tokenizer, template = load_tokenizer(tokenizer_dir)
    assert template == CHATML
    text = render_chat(template, CHAT)
    assert text == ("<|im_start|>system\nYou are helpful.<|im_end|>\n"
                    "<|im_start|>user\nhello<|im_end|>\n"
                    "<|im_start|>assistant\nhi there<|im_end|>\n"
                    "<|im_start|>assistant\n")
    ids = tokenizer.encode(text).ids
    assert ids[:3] == [1, 3, 9] and ids[-2:] == [1, 5] and 0 not in ids  # no unknown words
    assert not render_chat(template, CHAT, add_generation_prompt=False).endswith("assistant\n")
    assert load_special_tokens(tokenizer_dir) == {
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": None, "unk_token": "<unk>"}


def test_render_chat_matches_transformers(tokenizer_dir):
    template = (
        "{{ bos_token }}{% set ns = namespace(n=0) %}"
        "{% for m in messages %}{% set ns.n = ns.n + 1 %}"
        "{% if m['role'] == 'tool' %}{% continue %}{% endif %}"
        "[{{ ns.n }}] {{ m['role'] }}: {{ m['content'] | trim }}{{ eos_token }}\n"
        "  {% generation %}{{ m | tojson }}{% endgeneration %}\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}[next] assistant:{% endif %}"
    )
    messages = CHAT + [{"role": "tool", "content": "<skip & me>"},
                       {"role": "user", "content": "  a < b & é  "}]
    reference = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_dir / "tokenizer.json"), bos_token="<s>", eos_token="</s>")
    expected = reference.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=True)
    assert render_chat(template, messages, bos_token="<s>", eos_token="</s>") == expected


def test_chat_template_jinja_file_wins(tokenizer_dir, tmp_path):
    directory = shutil.copytree(tokenizer_dir, tmp_path / "tok")
    (directory / "chat_template.jinja").write_text("{{ messages | length }}")
    tokenizer, template = load_tokenizer(directory)
    assert tokenizer is not None and render_chat(template, CHAT) == "2"


def test_named_chat_templates_pick_default(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "tool_use", "template": "tools"}, {"name": "default", "template": "chat"}]}))
    assert load_tokenizer(tmp_path) == (None, "chat")  # no tokenizer.json: the caller decides


def test_no_tokenizer_files(tmp_path):
    assert load_tokenizer(tmp_path) == (None, None)
    assert load_special_tokens(tmp_path)["eos_token"] is None


def test_corrupt_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="tokenizer.json could not be read"):
        load_tokenizer(tmp_path)


def test_template_errors_become_value_errors():
    template = ("{% if messages[0]['role'] != 'user' %}"
                "{{ raise_exception('Conversations must start with the user') }}{% endif %}")
    with pytest.raises(ValueError, match="must start with the user"):
        render_chat(template, [{"role": "assistant", "content": "x"}])
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        render_chat(template, [{"role": "user", "content": "x"}, {"content": "no role"}])


def test_templates_run_in_the_sandbox():
    with pytest.raises(ValueError, match="chat template failed"):
        render_chat("{{ messages.__class__.__mro__ }}", CHAT)
    with pytest.raises(ValueError, match="chat template failed"):
        render_chat("{% set ns = namespace() %}{% set ns._x = 1 %}", CHAT)


def test_minimal_config_gets_transformers_defaults():
    cfg = ModelConfig.from_dict(
        {"model_type": "llama", "vocab_size": 5, "hidden_size": 8, "intermediate_size": 8,
         "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16,
         "num_key_value_heads": None})
    assert (cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps) == (2, 4, 1e-6)
    assert (cfg.rope_theta, cfg.rope_scaling, cfg.tie_word_embeddings) == (10000.0, None, False)
    assert cfg.eos_token_ids == () and cfg.torch_dtype is None
