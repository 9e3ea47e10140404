"""The decoder with quantized matrices: stacked q/k/v and gate/up products against separate ones,
every ISA path against the ref kernels, and 8-bit weights against transformers' float32 logits."""
import numpy as np
import pytest
import torch
import transformers

from infermode import _core
from infermode.checkpoints.hf import load_checkpoint
from infermode.llm import _core_config

ISAS = list(_core.supported_isas())


def _tiny(model_class, config_class, **extra):
    config = config_class(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        initializer_range=0.15, bos_token_id=1, eos_token_id=2, **extra)
    return model_class(config).eval()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def checkpoint(request, tmp_path_factory):
    torch.manual_seed(7)
    if request.param == "llama":
        model = _tiny(transformers.LlamaForCausalLM, transformers.LlamaConfig,
                      tie_word_embeddings=False)
    else:
        model = _tiny(transformers.Qwen2ForCausalLM, transformers.Qwen2Config,
                      tie_word_embeddings=True)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0.0, 0.5)
    directory = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(directory)
    return load_checkpoint(directory), model


def _decoder(checkpoint, fmt, stack=True):
    quantized = {n: fmt for n, a in checkpoint.weights.items() if a.ndim == 2}
    return _core.Decoder(_core_config(checkpoint.config), dict(checkpoint.weights), [],
                         quantized, stack)


IDS = np.array([[1, 5, 9, 33, 60, 2, 17, 80], [4, 4, 70, 12, 3, 91, 40, 8]], np.int32)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
def test_stacked_products_give_what_separate_ones_give(checkpoint, fmt):
    ck, _ = checkpoint
    stacked, apart = _decoder(ck, fmt), _decoder(ck, fmt, stack=False)
    # Each output row is the same integer dot product either way: bit-identical logits.
    np.testing.assert_array_equal(stacked.forward(IDS, 2), apart.forward(IDS, 2))
    prompts = [list(map(int, row)) for row in IDS]
    assert stacked.generate(prompts, 12)[0] == apart.generate(prompts, 12)[0]


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_path_gives_the_ref_logits(restore_isa, checkpoint, isa):
    ck, _ = checkpoint
    model = _decoder(ck, "q4_1")
    restore_isa.set_isa("ref")
    want = model.forward(IDS, 2)
    restore_isa.set_isa(isa)
    np.testing.assert_allclose(model.forward(IDS, 2), want, rtol=0, atol=1e-4)


# Relative RMS error of the logits (||got - want|| / ||want||) against float32 transformers.
# Measured on these models: Q8_0 ~3% (2.4% from rounding the weights, 1.7% from 8-bit
# activations), Q4_0 ~39% (random normal weights on a 16-level grid). Tiny random models with a
# wide init amplify errors far more than trained ones; the bounds leave ~1.6x headroom.
LOGITS_REL_TOL = {"q8_0": 0.05, "q4_0": 0.6}


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_quantized_logits_stay_close_to_float32_transformers(checkpoint, fmt):
    ck, reference = checkpoint
    with torch.no_grad():
        want = reference(torch.from_numpy(IDS.astype(np.int64))).logits.numpy()
    got = _decoder(ck, fmt).forward(IDS, 2)
    error = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert 1e-4 < error < LOGITS_REL_TOL[fmt]  # close, and really quantized


def test_quantizing_a_vector_or_a_ragged_matrix_is_refused(checkpoint):
    ck, _ = checkpoint
    weights = dict(ck.weights)
    with pytest.raises(TypeError, match="only weight matrices"):
        _core.Decoder(_core_config(ck.config), weights, [], {"model.norm.weight": "q8_0"})
    with pytest.raises(ValueError, match="unknown quantized format"):
        _core.Decoder(_core_config(ck.config), weights, [], {"model.embed_tokens.weight": "q5"})
    with pytest.raises(ValueError, match="not among the tensors"):
        _core.Decoder(_core_config(ck.config), weights, [], {"lm_head.bias": "q8_0"})
