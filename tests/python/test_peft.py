"""LoRA adapters against PEFT: logits merged and unmerged, rsLoRA, rank/alpha patterns, trained
biases, modules_to_save, adapted embeddings and output layers, switching, and mismatches.

Every base is a tiny random model written by transformers; every adapter is made by
``peft.get_peft_model`` with random non-zero factors and written by ``save_pretrained``; PEFT
runs in the same test as the reference (its unmerged forward: what the adapter means).
"""
import copy
import json
import shutil

import numpy as np
import pytest
import torch
import transformers

peft = pytest.importorskip("peft")

import infermode as im  # noqa: E402
from infermode.checkpoints.peft import load_adapter, same_model_name  # noqa: E402
from infermode.llm import CausalLM  # noqa: E402

LOGITS_ATOL = 1e-4
INIT = 0.15
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IDS = np.array([[3, 17, 42, 5, 60, 11, 29, 8], [7, 7, 50, 23, 1, 64, 31, 2]])


def _llama(hidden=64, tie=False):
    return transformers.LlamaConfig(
        vocab_size=97, hidden_size=hidden, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rms_norm_eps=1e-5, initializer_range=INIT, tie_word_embeddings=tie, bos_token_id=1,
        eos_token_id=2)


def _qwen2(tie=True):
    return transformers.Qwen2Config(
        vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rms_norm_eps=1e-6, rope_theta=1000000.0, initializer_range=INIT, tie_word_embeddings=tie,
        bos_token_id=1, eos_token_id=2)


BASES = {
    "llama": (_llama, transformers.LlamaForCausalLM),
    "llama_tied": (lambda: _llama(tie=True), transformers.LlamaForCausalLM),
    "qwen2": (_qwen2, transformers.Qwen2ForCausalLM),
}


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """name -> (directory, transformers model)."""
    built = {}
    for i, (name, (make_config, model_class)) in enumerate(BASES.items()):
        torch.manual_seed(100 + i)
        model = model_class(make_config()).eval()
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if pname.endswith("bias"):
                    p.normal_(0.0, 0.5)
        directory = tmp_path_factory.mktemp(name)
        model.save_pretrained(directory)
        built[name] = (directory, model)
    return built


def make_adapter(base, directory, seed, train_biases=False, **config):
    """A PEFT model over a copy of ``base`` with random non-zero LoRA factors, saved to
    ``directory``; returns the PEFT model (the reference)."""
    config.setdefault("r", 4)
    config.setdefault("lora_alpha", 8)
    config.setdefault("target_modules", PROJECTIONS)
    model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**config)).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or (train_biases and name.endswith("bias")):
                p.normal_(0.0, 0.2)
            elif "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(directory)
    return model


def logits_of(model, ids=IDS):
    with torch.no_grad():
        return model(torch.from_numpy(ids)).logits.numpy()


def ours(directory, adapter, merge, **kwargs):
    return CausalLM.from_pretrained(directory, adapter=adapter, merge=merge, **kwargs)


# ------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "unmerged"])
@pytest.mark.parametrize("rslora", [False, True], ids=["lora", "rslora"])
@pytest.mark.parametrize("base", ["llama", "qwen2"])
def test_logits_match_peft(bases, tmp_path, base, rslora, merge):
    directory, model = bases[base]
    reference = make_adapter(model, tmp_path / "adapter", seed=1, r=8, lora_alpha=16,
                             use_rslora=rslora)
    want = logits_of(reference)
    assert np.abs(want - logits_of(model)).max() > 1e-2  # the adapter changes the outputs
    got = ours(directory, tmp_path / "adapter", merge).forward(IDS)
    np.testing.assert_allclose(got, want, atol=LOGITS_ATOL, rtol=0)


def test_rank_and_alpha_patterns_match_peft(bases, tmp_path):
    directory, model = bases["llama"]
    reference = make_adapter(model, tmp_path / "adapter", seed=2, r=4, lora_alpha=8,
                             rank_pattern={"q_proj": 8, "layers.1.mlp.down_proj": 2},
                             alpha_pattern={"up_proj": 32})
    adapter = load_adapter(tmp_path / "adapter")
    assert adapter.updates["model.layers.0.self_attn.q_proj.weight"].a.shape[0] == 8
    assert adapter.updates["model.layers.1.mlp.down_proj.weight"].a.shape[0] == 2
    assert adapter.updates["model.layers.0.mlp.up_proj.weight"].scale == 32 / 4
    want = logits_of(reference)
    for merge in (True, False):
        got = ours(directory, tmp_path / "adapter", merge).forward(IDS)
        np.testing.assert_allclose(got, want, atol=LOGITS_ATOL, rtol=0)


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "unmerged"])
def test_trained_biases_match_peft(bases, tmp_path, merge):
    """bias="all": the adapter carries Qwen2's q/k/v biases, trained (so not the base's)."""
    directory, model = bases["qwen2"]
    reference = make_adapter(model, tmp_path / "adapter", seed=3, bias="all",
                             target_modules=["q_proj", "v_proj", "down_proj"], train_biases=True)
    adapter = load_adapter(tmp_path / "adapter")
    assert "model.layers.0.self_attn.k_proj.bias" in adapter.replacements  # not a LoRA target
    got = ours(directory, tmp_path / "adapter", merge).forward(IDS)
    np.testing.assert_allclose(got, logits_of(reference), atol=LOGITS_ATOL, rtol=0)


def test_embedding_head_and_modules_to_save_merged(bases, tmp_path):
    """An adapted embedding and output layer of a tied model (they part ways: PEFT adapts one
    module each) and a final norm saved whole: merged, all as PEFT computes them."""
    directory, model = bases["llama_tied"]
    reference = make_adapter(model, tmp_path / "adapter", seed=4,
                             target_modules=["q_proj", "embed_tokens", "lm_head"],
                             modules_to_save=["model.norm"])
    adapter = load_adapter(tmp_path / "adapter")
    assert adapter.updates["model.embed_tokens.weight"].embedding
    assert "model.norm.weight" in adapter.replacements
    lm = ours(directory, tmp_path / "adapter", merge=True)
    np.testing.assert_allclose(lm.forward(IDS), logits_of(reference), atol=LOGITS_ATOL, rtol=0)
    with pytest.raises(ValueError, match="embedding.*merged"):
        ours(directory, tmp_path / "adapter", merge=False)


def test_modules_to_save_cannot_be_switched_unmerged(bases, tmp_path):
    directory, model = bases["llama"]
    make_adapter(model, tmp_path / "adapter", seed=5, modules_to_save=["model.norm"])
    with pytest.raises(ValueError, match=r"replaces 'model\.norm\.weight'.*merged"):
        ours(directory, tmp_path / "adapter", merge=False)


def test_adapted_output_layer_of_a_tied_model_unmerged(bases, tmp_path):
    """PEFT saves a copy of an adapted output layer's base weight; equal to the base, it is
    dropped, and the LoRA update of the head is applied on top of the tied embedding."""
    directory, model = bases["llama_tied"]
    reference = make_adapter(model, tmp_path / "adapter", seed=6,
                             target_modules=["v_proj", "lm_head"])
    assert "lm_head.weight" in load_adapter(tmp_path / "adapter").replacements
    for merge in (False, True):
        got = ours(directory, tmp_path / "adapter", merge).forward(IDS)
        np.testing.assert_allclose(got, logits_of(reference), atol=LOGITS_ATOL, rtol=0)


def test_merged_into_bfloat16_and_quantized_weights(bases, tmp_path):
    """Merged adapters take the dtype asked for: each result is as close to PEFT as the plain
    model in that dtype is to transformers."""
    directory, model = bases["llama"]
    reference = make_adapter(model, tmp_path / "adapter", seed=7)
    want, base = logits_of(reference), logits_of(model)
    for dtype in ("bfloat16", "q8_0"):
        plain = CausalLM.from_pretrained(directory, dtype=dtype).forward(IDS)
        tolerance = 3 * np.abs(plain - base).max()
        for merge in (True, False):
            got = ours(directory, tmp_path / "adapter", merge, dtype=dtype).forward(IDS)
            assert np.abs(got - want).max() <= tolerance, (dtype, merge)


# ----------------------------------------------------------------------------- switching


def test_switching_adapters_gives_each_its_own_logits(bases, tmp_path):
    directory, model = bases["qwen2"]
    first = make_adapter(model, tmp_path / "fr", seed=10)
    second = make_adapter(model, tmp_path / "de", seed=11, r=2, target_modules=["o_proj", "up_proj"])
    lm = CausalLM.from_pretrained(directory, adapter=tmp_path / "fr", merge=False)
    assert lm.adapters == ("default",) and lm.active_adapter == "default"
    assert lm.load_adapter(tmp_path / "de") == "de" and lm.active_adapter == "de"
    for name, reference in (("default", first), ("de", second), (None, model),
                            ("default", first)):
        lm.set_adapter(name)
        np.testing.assert_allclose(lm.forward(IDS), logits_of(reference), atol=LOGITS_ATOL,
                                   rtol=0, err_msg=str(name))
    lm.delete_adapter("default")
    assert lm.adapters == ("de",) and lm.active_adapter is None


def test_an_adapter_loaded_inside_the_native_mode_outlives_it(bases, tmp_path):
    """The adapter's tensors are the model's from then on: they must not come from the arena
    that the native mode hands back when its block ends."""
    directory, model = bases["llama"]
    reference = make_adapter(model, tmp_path / "a", seed=12)
    lm = CausalLM.from_pretrained(directory)
    with im.inference_mode():
        lm.load_adapter(tmp_path / "a")
    with im.inference_mode():  # the arena's memory used again, for something else
        lm.forward(IDS[:, ::-1].copy())
    np.testing.assert_allclose(lm.forward(IDS), logits_of(reference), atol=LOGITS_ATOL, rtol=0)


def test_generation_applies_the_active_adapter(bases, tmp_path):
    """Every generated token is PEFT's argmax given the tokens before it (ties within the
    tolerance allowed), and the adapter changes what is generated."""
    directory, model = bases["llama"]
    reference = make_adapter(model, tmp_path / "adapter", seed=12)
    lm = CausalLM.from_pretrained(directory, adapter=tmp_path / "adapter", merge=False)
    prompt = IDS[0].tolist()
    tokens = lm.generate(prompt, max_new_tokens=10, stop=[]).token_ids[0]
    logits = logits_of(reference, np.array([prompt + tokens]))[0]
    for step, token in enumerate(tokens):
        row = logits[len(prompt) - 1 + step]
        assert row[token] >= row.max() - LOGITS_ATOL, step
    lm.set_adapter(None)
    assert lm.generate(prompt, max_new_tokens=10, stop=[]).token_ids[0] != tokens


# ----------------------------------------------------------------------------- mismatches


def test_adapter_for_another_model_size_is_refused(bases, tmp_path):
    torch.manual_seed(0)
    other = transformers.LlamaForCausalLM(_llama(hidden=32)).eval()
    make_adapter(other, tmp_path / "adapter", seed=20)
    directory, _ = bases["llama"]
    for merge in (True, False):
        with pytest.raises(ValueError, match=r"q_proj'.*another model size"):
            ours(directory, tmp_path / "adapter", merge)


def test_adapter_for_another_architecture_is_refused(bases, tmp_path):
    """A Qwen2 adapter that trained the q/k/v biases, on a Llama (which has none)."""
    _, qwen2 = bases["qwen2"]
    make_adapter(qwen2, tmp_path / "adapter", seed=21, bias="all", train_biases=True)
    directory, _ = bases["llama"]
    with pytest.raises(ValueError,
                       match=r"replaces .model\.layers\.0\.self_attn\.[qkv]_proj\.bias."):
        ours(directory, tmp_path / "adapter", True)


def test_adapter_for_another_base_model_name_is_refused(bases, tmp_path):
    directory, model = bases["llama"]
    reference = make_adapter(model, tmp_path / "adapter", seed=22)
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "meta-llama/Llama-3.2-1B-Instruct"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"trained on base model 'meta-llama/Llama-3\.2-1B-"
                                         r"Instruct'.*check_base_model=False"):
        ours(directory, tmp_path / "adapter", True)
    # The same model under another name: the user says so.
    lm = ours(directory, tmp_path / "adapter", True, check_base_model=False)
    np.testing.assert_allclose(lm.forward(IDS), logits_of(reference), atol=LOGITS_ATOL, rtol=0)
    # Named after the directory the base lives in: accepted.
    named = tmp_path / "Llama-3.2-1B-Instruct"
    shutil.copytree(directory, named)
    ours(named, tmp_path / "adapter", False)


def test_model_names():
    assert same_model_name("meta-llama/Llama-3.2-1B", "/models/llama-3.2-1b/")
    assert same_model_name("HuggingFaceTB/SmolLM2-135M-Instruct",
                           "/x/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert not same_model_name("meta-llama/Llama-3.2-1B", "Llama-3.2-1B-Instruct")
    assert not same_model_name("", "")


def test_unsupported_and_broken_adapters(bases, tmp_path):
    directory, model = bases["llama"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ours(directory, tmp_path / "missing", True)
    make_adapter(model, tmp_path / "dora", seed=23, use_dora=True)
    with pytest.raises(ValueError, match="DoRA"):
        ours(directory, tmp_path / "dora", True)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tmp_path / "dora" / "adapter_config.json", pickled)
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="pickle"):
        load_adapter(pickled)
    make_adapter(model, tmp_path / "ok", seed=24)
    config_path = tmp_path / "ok" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "r": 16}))
    with pytest.raises(ValueError, match="expected rank 16"):
        load_adapter(tmp_path / "ok")
    config_path.write_text(json.dumps({**config, "r": "four"}))
    with pytest.raises(ValueError, match="field 'r' is 'four'"):
        load_adapter(tmp_path / "ok")


def test_adapter_bookkeeping_errors(bases, tmp_path):
    directory, model = bases["llama"]
    make_adapter(model, tmp_path / "a", seed=30)
    merged = CausalLM.from_pretrained(directory, adapter=tmp_path / "a")
    assert merged.merged_adapter == "a" and merged.adapters == ()
    with pytest.raises(ValueError, match="merged into this model's weights.*merge=False"):
        merged.load_adapter(tmp_path / "a")
    lm = CausalLM.from_pretrained(directory)
    lm.load_adapter(tmp_path / "a", "x", activate=False)
    assert lm.active_adapter is None
    with pytest.raises(ValueError, match="already loaded"):
        lm.load_adapter(tmp_path / "a", "x")
    with pytest.raises(ValueError, match=r"no adapter named 'y' is loaded \(loaded: 'x'\)"):
        lm.set_adapter("y")


def test_pipeline_runs_the_merged_adapter(bases, tmp_path):
    directory, model = bases["llama"]
    make_adapter(model, tmp_path / "adapter", seed=31)
    config = im.InferenceConfig(str(directory), adapter=tmp_path / "adapter", max_new_tokens=6,
                                batch_size=2)
    results = im.InferencePipeline(config).setup().generate(IDS.tolist())
    want = ours(directory, tmp_path / "adapter", True).generate(IDS, max_new_tokens=6).token_ids
    assert [r.token_ids for r in results] == want
