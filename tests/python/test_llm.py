"""CausalLM against transformers: logits, greedy tokens, batching, captured activations, errors.

Every model is a tiny one built by transformers itself with random weights and written with
save_pretrained; transformers runs in the same test as the reference.
"""
import json
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import torch
import transformers

import infermode as im
from infermode.llm import CausalLM, _matrix_formats, _weights_as

LOGITS_ATOL = 1e-4
# Larger than transformers' default init, so random models give varied tokens and clear argmaxes.
INIT = 0.15


def _llama_gqa():
    return transformers.LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=3,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, initializer_range=INIT, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2)


def _llama3_scaled():
    return transformers.LlamaConfig(
        vocab_size=89, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rms_norm_eps=1e-5, initializer_range=INIT, bos_token_id=1, eos_token_id=2,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64})


def _qwen2_bias_tied():
    return transformers.Qwen2Config(
        vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=1000000.0, initializer_range=INIT,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)


def _smollm2_like():
    # Tied, head_dim 48 (not 64), an odd vocabulary.
    return transformers.LlamaConfig(
        vocab_size=131, hidden_size=96, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=48, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=100000.0, initializer_range=INIT,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)


MODELS = {
    "llama_gqa": (_llama_gqa, transformers.LlamaForCausalLM),
    "llama3_rope_scaling": (_llama3_scaled, transformers.LlamaForCausalLM),
    "qwen2_bias_tied": (_qwen2_bias_tied, transformers.Qwen2ForCausalLM),
    "smollm2_like": (_smollm2_like, transformers.LlamaForCausalLM),
}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """name -> (directory, transformers model), built once per session."""
    built = {}
    for name, (make_config, model_class) in MODELS.items():
        torch.manual_seed(hash(name) % 1000)
        model = model_class(make_config()).eval()
        with torch.no_grad():  # random, non-zero biases (transformers initialises them to 0)
            for pname, p in model.named_parameters():
                if pname.endswith("bias"):
                    p.normal_(0.0, 0.5)
        directory = tmp_path_factory.mktemp(name)
        model.save_pretrained(directory)
        built[name] = (directory, model)
    return built


@pytest.fixture(scope="session")
def loaded(checkpoints):
    return {name: CausalLM.from_pretrained(d) for name, (d, _) in checkpoints.items()}


PROMPTS = [[1, 5, 9, 14, 3, 7, 22, 8], [1, 30, 4], [1, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]]


def _hf_greedy(model, prompt, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                             pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_match_transformers(checkpoints, loaded, name):
    _, model = checkpoints[name]
    ids = np.array([PROMPTS[0], [1] + PROMPTS[2][1:8]], dtype=np.int64)
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    got = loaded[name].forward(ids)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= LOGITS_ATOL
    last = loaded[name].forward(ids, last_only=True)
    assert last.shape == (2, 1, want.shape[2])
    assert np.abs(last[:, 0] - want[:, -1]).max() <= LOGITS_ATOL


@pytest.mark.parametrize("name", list(MODELS))
def test_32_greedy_tokens_match_transformers(checkpoints, loaded, name):
    _, model = checkpoints[name]
    seen = set()
    for prompt in PROMPTS:
        want = _hf_greedy(model, prompt, 32)
        got = loaded[name].generate(prompt, max_new_tokens=32).token_ids[0]
        assert got == want
        seen.update(want)
    assert len(seen) > 3, "the random model should produce varied tokens"


@pytest.mark.parametrize("name", list(MODELS))
def test_batched_generation_equals_one_by_one(loaded, name):
    lm = loaded[name]
    batched = lm.generate(PROMPTS, max_new_tokens=20).token_ids
    alone = [lm.generate(p, max_new_tokens=20).token_ids[0] for p in PROMPTS]
    assert batched == alone
    sampled = lm.generate(PROMPTS, max_new_tokens=12, temperature=0.8, top_k=20, top_p=0.9,
                          seed=7).token_ids
    sampled_alone = [lm.generate([p], max_new_tokens=12, temperature=0.8, top_k=20, top_p=0.9,
                                 seed=7).token_ids[0] for p in PROMPTS]
    # Each sequence draws from a generator seeded by (seed, its index in the batch).
    assert sampled[0] == sampled_alone[0]


@pytest.mark.parametrize("name", list(MODELS))
def test_captured_blocks_equal_transformers_hidden_states(checkpoints, loaded, name):
    _, model = checkpoints[name]
    prompt = PROMPTS[0]
    layers = model.config.num_hidden_layers
    names = ["embed"] + [f"blocks.{i}.resid_post" for i in range(layers)] + ["final_norm"]
    out = loaded[name].generate(prompt, max_new_tokens=1, capture=names, capture_positions="all")
    with torch.no_grad():
        hidden = model(torch.tensor([prompt]), output_hidden_states=True).hidden_states
    assert len(hidden) == layers + 1
    np.testing.assert_allclose(out.activations["embed"][0], hidden[0][0].numpy(), atol=1e-6)
    for i in range(layers - 1):  # transformers' last entry has the final norm applied
        np.testing.assert_allclose(out.activations[f"blocks.{i}.resid_post"][0],
                                   hidden[i + 1][0].numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out.activations["final_norm"][0], hidden[layers][0].numpy(),
                               atol=1e-4, rtol=1e-4)


def test_generated_positions_hold_the_state_that_chose_each_token(checkpoints, loaded):
    _, model = checkpoints["llama_gqa"]
    lm = loaded["llama_gqa"]
    prompt = PROMPTS[1]
    out = lm.generate(prompt, max_new_tokens=6, capture=["final_norm"], stop=[])
    tokens = out.token_ids[0]
    full = prompt + tokens
    with torch.no_grad():
        hidden = model(torch.tensor([full]), output_hidden_states=True).hidden_states[-1][0]
    # Step j: the last prompt token (j = 0), then the generated tokens fed back.
    want = hidden[len(prompt) - 1: len(prompt) - 1 + 6].numpy()
    np.testing.assert_allclose(out.activations["final_norm"][0], want, atol=1e-4, rtol=1e-4)
    mean = lm.generate(prompt, max_new_tokens=2, capture=["final_norm"],
                       capture_positions="prompt_mean").activations["final_norm"]
    np.testing.assert_allclose(mean[0, 0], hidden[: len(prompt)].numpy().mean(0), atol=1e-4)


def test_old_and_new_rope_keys_load_alike(checkpoints, tmp_path):
    directory, _ = checkpoints["llama3_rope_scaling"]
    config = json.loads((directory / "config.json").read_text())
    old = tmp_path / "old_keys"
    shutil.copytree(directory, old)
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = rope
    (old / "config.json").write_text(json.dumps(config))
    ids = np.array([PROMPTS[2]])
    new_logits = CausalLM.from_pretrained(directory).forward(ids)
    old_logits = CausalLM.from_pretrained(old).forward(ids)
    np.testing.assert_array_equal(new_logits, old_logits)


def test_streaming_yields_the_same_tokens(loaded):
    lm = loaded["qwen2_bias_tied"]
    want = lm.generate(PROMPTS[0], max_new_tokens=10).token_ids[0]
    streamed = [t.token_id for t in lm.generate(PROMPTS[0], max_new_tokens=10, stream=True)]
    assert streamed == want


def test_ctrl_c_stops_generation_and_the_model_still_works(tmp_path):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16384,
        initializer_range=INIT)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    lm = CausalLM.from_pretrained(tmp_path)
    before = lm.generate([1, 2, 3], max_new_tokens=5, stop=[]).token_ids
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        lm.generate([1, 2, 3], max_new_tokens=16000, stop=[])
    elapsed = time.perf_counter() - start
    timer.cancel()
    assert elapsed < 30
    assert lm.generate([1, 2, 3], max_new_tokens=5, stop=[]).token_ids == before


class TestErrors:
    def test_missing_directory_and_files(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            CausalLM.from_pretrained(tmp_path / "nowhere")
        with pytest.raises(FileNotFoundError, match="no config.json"):
            CausalLM.from_pretrained(tmp_path)

    def test_unsupported_model_type_lists_the_supported(self, checkpoints, tmp_path):
        directory, _ = checkpoints["llama_gqa"]
        shutil.copytree(directory, tmp_path / "m")
        config = json.loads((tmp_path / "m" / "config.json").read_text())
        config["model_type"] = "gpt2"
        (tmp_path / "m" / "config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match="'gpt2' is not supported; supported: llama, qwen2"):
            CausalLM.from_pretrained(tmp_path / "m")

    def test_unsupported_dtype(self, checkpoints):
        with pytest.raises(ValueError, match="dtype 'int4' is not supported"):
            CausalLM.from_pretrained(checkpoints["llama_gqa"][0], dtype="int4")

    def test_context_overflow(self, loaded):
        lm = loaded["llama_gqa"]
        with pytest.raises(ValueError, match="exceeds the model's context of 256 positions"):
            lm.generate(PROMPTS[0], max_new_tokens=250)

    def test_layer_out_of_range_gives_the_valid_range(self, loaded):
        with pytest.raises(ValueError, match=r"block index 3 is outside the valid range 0\.\.2"):
            loaded["llama_gqa"].generate(PROMPTS[0], max_new_tokens=2, capture=[3])
        with pytest.raises(ValueError, match="cannot capture 'blocks.x'"):
            loaded["llama_gqa"].generate(PROMPTS[0], max_new_tokens=2, capture=["blocks.x"])

    def test_empty_prompts(self, loaded):
        with pytest.raises(ValueError, match="at least one prompt"):
            loaded["llama_gqa"].generate([], max_new_tokens=2)
        with pytest.raises(ValueError, match="prompt 1 is empty"):
            loaded["llama_gqa"].generate([[1, 2], []], max_new_tokens=2)

    def test_bad_token_ids_and_sampling(self, loaded):
        lm = loaded["llama_gqa"]
        with pytest.raises(ValueError, match=r"token id 97, outside \[0, 97\)"):
            lm.generate([1, 97], max_new_tokens=2)
        with pytest.raises(ValueError, match="top_p must be in"):
            lm.generate([1, 2], max_new_tokens=2, temperature=1.0, top_p=0.0)
        with pytest.raises(ValueError, match="max_new_tokens must be a positive int"):
            lm.generate([1, 2], max_new_tokens=0)


# bfloat16 weights, float32 arithmetic: against transformers in float32 with the same rounded
# matrices the only difference is summation order, so the float32 tolerance holds. Against
# transformers computing in bfloat16 (activations rounded at every op) the gap is that rounding.
BF16_VS_TORCH_BF16_ATOL = 0.15


def _rounded_matrices(model):
    """A float32 copy of `model` whose weight matrices are rounded to bfloat16 (vectors kept)."""
    import copy

    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim == 2:
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    return ref


@pytest.mark.parametrize("isa", list(im._core.supported_isas()))
@pytest.mark.parametrize("name", ["llama_gqa", "qwen2_bias_tied"])
def test_bfloat16_weights_match_transformers_on_every_isa(checkpoints, restore_isa, name, isa):
    directory, model = checkpoints[name]
    restore_isa.set_isa(isa)
    lm = CausalLM.from_pretrained(directory, dtype="bfloat16")
    assert lm.dtype == "bfloat16"
    ids = np.array([PROMPTS[0]])
    with torch.no_grad():
        want = _rounded_matrices(model)(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(lm.forward(ids) - want).max() <= LOGITS_ATOL


def test_bfloat16_checkpoint_loads_without_copies_and_tracks_torch_bf16(checkpoints, tmp_path):
    _, model = checkpoints["llama_gqa"]
    import copy

    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    bf16.save_pretrained(tmp_path)
    lm = CausalLM.from_pretrained(tmp_path, dtype="auto")
    assert lm.dtype == "bfloat16"
    q = "model.layers.0.self_attn.q_proj.weight"
    tensors, bfloat16 = _weights_as(lm._checkpoint, _matrix_formats(lm._checkpoint, "bfloat16"),
                                    {})
    assert q in bfloat16 and tensors[q] is lm._checkpoint.weights[q]  # the file's own view
    ids = np.array([PROMPTS[2]])
    with torch.no_grad():
        torch_bf16 = bf16(torch.from_numpy(ids)).logits.float().numpy()
    assert np.abs(lm.forward(ids) - torch_bf16).max() <= BF16_VS_TORCH_BF16_ATOL
