"""InferencePipeline and the activation files it writes, against CausalLM.generate on the same
prompts: results, order, shards + index.json, load_activations, interrupted runs, config errors.

The model is a tiny random Llama built by transformers and written with save_pretrained.
"""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open

import infermode as im
import infermode.activations as activations_module
from infermode.activations import load_activations, load_index
from infermode.llm import CausalLM

MAX_NEW = 6
LAYERS = (0, "blocks.2.resid_post", "final_norm")
NAMES = ("blocks.0.resid_post", "blocks.2.resid_post", "final_norm")
PROMPT_LENGTHS = (5, 1, 9, 3, 12, 7, 2)  # 7 prompts: batch size 3 leaves a last batch of 1
PROMPTS = [np.random.default_rng(7).integers(3, 97, size=n).tolist() for n in PROMPT_LENGTHS]

WORDS = ["<unk>", "<s>", "</s>", "the", "a", "cat", "dog", "sat", "on", "mat", "ran", "far",
         "and", "then", "slept", "big", "small", "red", "blue", "house"]


def _llama_config():
    return transformers.LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=3,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256,
        initializer_range=0.15, bos_token_id=1, eos_token_id=2)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    """A checkpoint whose end-of-sequence token stops some of PROMPTS early and not others, so
    the zero rows of stopped sequences are exercised."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("pipeline_llama")
    transformers.LlamaForCausalLM(_llama_config()).eval().save_pretrained(directory)
    # A random model rarely emits its configured EOS; make a token it does emit the EOS instead:
    # the third token of prompt 0's greedy continuation.
    tokens = CausalLM.from_pretrained(directory).generate(
        PROMPTS, max_new_tokens=MAX_NEW, stop=[]).token_ids
    eos = tokens[0][2]
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["eos_token_id"] = eos
    config_path.write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="session")
def text_llama_dir(llama_dir, tmp_path_factory):
    """The same weights with a small WordLevel tokenizer.json, for text prompts."""
    import tokenizers
    from tokenizers import models, pre_tokenizers

    directory = tmp_path_factory.mktemp("pipeline_llama_text")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(llama_dir / name, directory / name)
    vocab = {w: i for i, w in enumerate(WORDS + [f"w{i}" for i in range(len(WORDS), 97)])}
    tokenizer = tokenizers.Tokenizer(models.WordLevel(vocab, "<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


@pytest.fixture(scope="session")
def model(llama_dir):
    return CausalLM.from_pretrained(llama_dir)


def _pipeline(path, **kwargs):
    kwargs.setdefault("max_new_tokens", MAX_NEW)
    return im.InferencePipeline(im.InferenceConfig(model_path=str(path), **kwargs)).setup()


def _extracting(path, directory, **kwargs):
    return _pipeline(path, extract_activations=True, layers_to_extract=LAYERS,
                     activations_dir=str(directory), **kwargs)


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------------------ results


@pytest.mark.parametrize("positions", ["generated", "all", "prompt_mean"])
def test_results_match_causallm_generate(llama_dir, model, tmp_path, positions):
    pipe = _extracting(llama_dir, tmp_path, batch_size=3, capture_positions=positions)
    out = pipe.generate(PROMPTS, progress=False)

    whole = model.generate(PROMPTS, max_new_tokens=MAX_NEW)
    assert out.token_ids == whole.token_ids
    stopped = [len(t) < MAX_NEW for t in out.token_ids]
    assert any(stopped) and not all(stopped), "the fixture's EOS should stop some prompts only"

    acts = load_activations(tmp_path)
    for start in range(0, len(PROMPTS), 3):
        rows = slice(start, start + 3)
        reference = model.generate(PROMPTS[rows], max_new_tokens=MAX_NEW, capture=list(LAYERS),
                                   capture_positions=positions)
        assert out.token_ids[rows] == reference.token_ids
        for name in NAMES:
            expected = reference.activations[name]
            steps = expected.shape[1]
            np.testing.assert_array_equal(acts[name][rows, :steps], expected)
            assert not acts[name][rows, steps:].any(), "padding past a shard's steps is zero"
    # One call over all prompts computes the same rows (up to summation order in the kernels).
    everything = model.generate(PROMPTS, max_new_tokens=MAX_NEW, capture=list(LAYERS),
                                capture_positions=positions)
    for name in NAMES:
        np.testing.assert_allclose(acts[name], everything.activations[name], rtol=0, atol=1e-5)


def test_order_kept_when_batch_size_does_not_divide_the_prompts(llama_dir, model):
    one_by_one = [model.generate([p], max_new_tokens=MAX_NEW).token_ids[0] for p in PROMPTS]
    for batch_size in (1, 3, 4, 7, 50):
        out = _pipeline(llama_dir, batch_size=batch_size).generate(PROMPTS, progress=False)
        assert len(out) == len(PROMPTS)
        assert [r.index for r in out] == list(range(len(PROMPTS)))
        assert [r.prompt_length for r in out] == list(PROMPT_LENGTHS)
        assert out.token_ids == one_by_one, f"batch_size={batch_size}"
        assert out.activation_index is None and out[0].shard is None and out[0].row is None


def test_text_prompts(text_llama_dir):
    texts = ["the cat sat on the mat", "a dog", "the big red house and then the small blue mat"]
    model = CausalLM.from_pretrained(text_llama_dir)
    reference = model.generate(texts, max_new_tokens=MAX_NEW)
    out = _pipeline(text_llama_dir, batch_size=2).generate(texts, progress=False)
    assert out.texts == reference.texts and out.token_ids == reference.token_ids
    assert [r.text for r in out] == reference.texts
    assert out[0].prompt_length == 6


def test_prompts_without_tokenizer_must_be_ids(llama_dir):
    with pytest.raises(ValueError, match="tokenizer"):
        _pipeline(llama_dir).generate(["the cat"], progress=False)
    out = _pipeline(llama_dir).generate(PROMPTS[:2], progress=False)
    assert out.texts is None and out[0].text is None


def test_sampling_is_reproducible_and_the_drawn_seed_is_recorded(llama_dir, model, tmp_path):
    sampling = dict(temperature=1.3, top_k=20, top_p=0.95)
    whole = model.generate(PROMPTS, max_new_tokens=MAX_NEW, seed=5, **sampling).token_ids
    # Prompt i draws from stream i of the seed in any batch: every batch size gives one call's
    # tokens.
    for batch_size in (len(PROMPTS), 3, 1):
        pipe = _pipeline(llama_dir, batch_size=batch_size, seed=5, **sampling)
        assert pipe.generate(PROMPTS, progress=False).token_ids == whole

    first = _extracting(llama_dir, tmp_path / "a", batch_size=3, **sampling)
    tokens = first.generate(PROMPTS, progress=False).token_ids
    seed = load_index(tmp_path / "a")["seed"]
    assert isinstance(seed, int)
    again = _extracting(llama_dir, tmp_path / "b", batch_size=3, seed=seed, **sampling)
    assert again.generate(PROMPTS, progress=False).token_ids == tokens


def test_progress_bar_counts_prompts(llama_dir, capsys):
    pipe = _pipeline(llama_dir, batch_size=3)
    pipe.generate(PROMPTS, progress=False)
    assert capsys.readouterr().err == ""
    pipe.generate(PROMPTS)
    assert f"{len(PROMPTS)}/{len(PROMPTS)}" in capsys.readouterr().err


# ------------------------------------------------------------------------------ files


def test_shards_and_index_are_complete(llama_dir, tmp_path):
    out = _extracting(llama_dir, tmp_path, batch_size=3).generate(PROMPTS, progress=False)
    assert _files(tmp_path) == ["index.json", "shard-00000.safetensors",
                                "shard-00001.safetensors", "shard-00002.safetensors"]
    assert out.activation_index == tmp_path / "index.json"
    assert out.activations_dir == tmp_path

    index = json.loads((tmp_path / "index.json").read_text())
    assert index["format"] == "infermode.activations" and index["version"] == 1
    assert index["model_path"] == str(llama_dir)
    assert index["capture_names"] == list(NAMES)
    assert index["capture_positions"] == "generated"
    assert index["dtype"] == "float32" and index["model_dtype"] == "float32"
    assert index["hidden_size"] == 64 and index["model"]["num_hidden_layers"] == 3
    assert index["config"]["batch_size"] == 3 and index["config"]["layers_to_extract"] == [
        0, "blocks.2.resid_post", "final_norm"]
    assert index["num_prompts"] == len(PROMPTS)

    shards = index["shards"]
    assert [s["file"] for s in shards] == _files(tmp_path)[1:]
    assert sum((s["prompt_indexes"] for s in shards), []) == list(range(len(PROMPTS)))
    assert sum((s["prompt_lengths"] for s in shards), []) == list(PROMPT_LENGTHS)
    assert sum((s["num_generated"] for s in shards), []) == [len(t) for t in out.token_ids]
    assert sum((s["valid_steps"] for s in shards), []) == [len(t) for t in out.token_ids]
    for number, shard in enumerate(shards):
        rows = len(shard["prompt_indexes"])
        with safe_open(str(tmp_path / shard["file"]), framework="numpy") as f:
            assert f.metadata()["format"] == "infermode.activations"
            for name in NAMES:
                tensor = f.get_tensor(name)
                assert tensor.dtype == np.float32
                assert list(tensor.shape) == shard["shapes"][name] == [rows, MAX_NEW, 64]
            np.testing.assert_array_equal(f.get_tensor("prompt_index"), shard["prompt_indexes"])
            np.testing.assert_array_equal(f.get_tensor("num_generated"), shard["num_generated"])
            np.testing.assert_array_equal(f.get_tensor("prompt_length"), shard["prompt_lengths"])
            ids = f.get_tensor("token_ids")
            for row, index_of_prompt in enumerate(shard["prompt_indexes"]):
                generated = out.token_ids[index_of_prompt]
                assert ids[row, :len(generated)].tolist() == generated
                assert (ids[row, len(generated):] == -1).all()
                assert out[index_of_prompt].shard == shard["file"]
                assert out[index_of_prompt].row == row
        assert number == int(shard["file"][6:11])


@pytest.mark.parametrize("positions", ["generated", "all", "prompt_mean"])
def test_load_activations_round_trips_exactly(llama_dir, tmp_path, positions):
    pipe = _extracting(llama_dir, tmp_path, batch_size=3, capture_positions=positions)
    out = pipe.generate(PROMPTS, progress=False)
    acts = load_activations(tmp_path)
    assert list(acts) == list(NAMES) and len(acts) == 3
    steps = {"generated": MAX_NEW, "all": max(PROMPT_LENGTHS) + MAX_NEW - 1, "prompt_mean": 1}
    for name in NAMES:
        assert acts[name].shape == (len(PROMPTS), steps[positions], 64)
        assert acts[name].dtype == np.float32
    # Shard by shard, byte for byte.
    for shard in acts.index["shards"]:
        with safe_open(str(tmp_path / shard["file"]), framework="numpy") as f:
            for name in NAMES:
                stored = f.get_tensor(name)
                np.testing.assert_array_equal(
                    acts[name][shard["prompt_indexes"], :stored.shape[1]], stored)
    # valid_mask marks exactly the rows that hold activations.
    mask = acts.valid_mask()
    np.testing.assert_array_equal(mask, np.abs(acts["final_norm"]).sum(-1) > 0)
    np.testing.assert_array_equal(acts.prompt_lengths, PROMPT_LENGTHS)
    np.testing.assert_array_equal(acts.num_generated, [len(t) for t in out.token_ids])
    assert [row[row >= 0].tolist() for row in acts.token_ids] == out.token_ids

    subset = load_activations(tmp_path, names=["final_norm"])
    assert list(subset) == ["final_norm"]
    np.testing.assert_array_equal(subset["final_norm"], acts["final_norm"])
    with pytest.raises(KeyError, match="'blocks.1.resid_post' was not captured"):
        load_activations(tmp_path, names=["blocks.1.resid_post"])


def test_load_activations_checks_the_files(llama_dir, tmp_path):
    _extracting(llama_dir, tmp_path, batch_size=3).generate(PROMPTS, progress=False)
    (tmp_path / "shard-00001.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="shard-00001.safetensors is listed"):
        load_activations(tmp_path)
    with pytest.raises(FileNotFoundError, match="not an activations directory"):
        load_activations(tmp_path / "nowhere")
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="index.json could not be read"):
        load_activations(tmp_path)


def test_interrupted_run_leaves_whole_shards_and_no_index(llama_dir, model, tmp_path,
                                                          monkeypatch):
    pipe = _extracting(llama_dir, tmp_path, batch_size=3)
    real_generate = pipe.model.generate
    calls = []

    def generate_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a Ctrl-C in the second batch would
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(pipe.model, "generate", generate_then_fail)
    with pytest.raises(KeyboardInterrupt):
        pipe.generate(PROMPTS, progress=False)
    assert _files(tmp_path) == ["shard-00000.safetensors"]
    with pytest.raises(FileNotFoundError, match="did not finish"):
        load_activations(tmp_path)
    # The surviving shard is whole and describes itself.
    reference = model.generate(PROMPTS[:3], max_new_tokens=MAX_NEW, capture=list(LAYERS))
    with safe_open(str(tmp_path / "shard-00000.safetensors"), framework="numpy") as f:
        np.testing.assert_array_equal(f.get_tensor("prompt_index"), [0, 1, 2])
        np.testing.assert_array_equal(f.get_tensor("final_norm"),
                                      reference.activations["final_norm"])

    monkeypatch.undo()
    with pytest.raises(FileExistsError, match="unfinished run.*overwrite=True"):
        pipe.generate(PROMPTS, progress=False)
    pipe.generate(PROMPTS, overwrite=True, progress=False)
    assert load_activations(tmp_path).index["num_prompts"] == len(PROMPTS)


@pytest.mark.parametrize("error", [OSError("No space left on device"), KeyboardInterrupt()])
def test_failing_write_leaves_no_partial_file(llama_dir, tmp_path, monkeypatch, error):
    real_save = activations_module.save_file
    calls = []

    def save_half_then_fail(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as f:  # the first bytes of a shard, then the failure
                f.write(b"\x00" * 100)
            raise error
        real_save(tensors, path, metadata)

    monkeypatch.setattr(activations_module, "save_file", save_half_then_fail)
    with pytest.raises(type(error)):
        _extracting(llama_dir, tmp_path, batch_size=3).generate(PROMPTS, progress=False)
    # Written under a hidden temporary name, removed on failure: no half file anywhere.
    assert calls[1] != str(tmp_path / "shard-00001.safetensors")
    assert _files(tmp_path) == ["shard-00000.safetensors"]


def test_existing_run_is_not_overwritten_without_overwrite(llama_dir, tmp_path):
    pipe = _extracting(llama_dir, tmp_path, batch_size=3)
    pipe.generate(PROMPTS, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    before = {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)}
    with pytest.raises(FileExistsError, match=r"finished run.*overwrite=True"):
        pipe.generate(PROMPTS[:2], progress=False)
    assert {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)} == before

    pipe.generate(PROMPTS[:2], overwrite=True, progress=False)
    # Only the previous run's files went; the user's file stays.
    assert _files(tmp_path) == ["index.json", "notes.txt", "shard-00000.safetensors"]
    assert load_activations(tmp_path)["final_norm"].shape[0] == 2


def test_activations_dir_is_created(llama_dir, tmp_path):
    target = tmp_path / "runs" / "probe"
    _extracting(llama_dir, target).generate(PROMPTS[:2], progress=False)
    assert (target / "index.json").is_file()


# ------------------------------------------------------------------------------ errors


CONFIG_ERRORS = [
    (dict(model_path=""), "model_path"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(batch_size=True), "batch_size"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(extract_activations="yes"), "extract_activations"),
    (dict(extract_activations=True, layers_to_extract=(1.5,), activations_dir="d"),
     "layers_to_extract"),
    (dict(extract_activations=True, layers_to_extract=("blocks.x",), activations_dir="d"),
     "layers_to_extract"),
    (dict(extract_activations=True, layers_to_extract=(-1,), activations_dir="d"),
     "layers_to_extract"),
    (dict(extract_activations=True, layers_to_extract="final_norm", activations_dir="d"),
     "layers_to_extract"),
    (dict(extract_activations=True, layers_to_extract=(1, "blocks.1.resid_post"),
          activations_dir="d"), "layers_to_extract"),
    (dict(extract_activations=True, layers_to_extract=(), activations_dir="d"),
     "layers_to_extract"),
    (dict(extract_activations=True, layers_to_extract=(0,)), "activations_dir"),
    (dict(layers_to_extract=(0,), activations_dir="d"), "extract_activations"),
    (dict(activations_dir=5), "activations_dir"),
    (dict(workers=0), "workers"),
    (dict(workers=2), "workers"),
    (dict(backend="spark"), "backend"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_k=-1), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(seed=-1), "seed"),
    (dict(seed="x"), "seed"),
    (dict(capture_positions="last"), "capture_positions"),
    (dict(threads=0), "threads"),
    (dict(dtype="float64"), "dtype"),
]


@pytest.mark.parametrize("kwargs, field", CONFIG_ERRORS,
                         ids=[f"{f.split('=')[0]}-{i}" for i, (_, f) in enumerate(CONFIG_ERRORS)])
def test_config_errors_name_the_field(kwargs, field):
    kwargs = {"model_path": "some/model", **kwargs}
    with pytest.raises(ValueError, match=field):
        im.InferenceConfig(**kwargs)


def test_config_normalises_and_revalidates_on_replace(tmp_path):
    cfg = im.InferenceConfig(model_path=tmp_path, extract_activations=True,
                             layers_to_extract=[1, "final_norm"], activations_dir=tmp_path / "a")
    assert cfg.model_path == str(tmp_path) and cfg.activations_dir == str(tmp_path / "a")
    assert cfg.layers_to_extract == (1, "final_norm")
    assert cfg.capture_names == ("blocks.1.resid_post", "final_norm")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.batch_size = 4
    assert dataclasses.replace(cfg, batch_size=4).batch_size == 4
    with pytest.raises(ValueError, match="batch_size"):
        dataclasses.replace(cfg, batch_size=0)


def test_layer_index_out_of_range_fails_at_setup(llama_dir, tmp_path):
    cfg = im.InferenceConfig(model_path=str(llama_dir), extract_activations=True,
                             layers_to_extract=(3,), activations_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"layers_to_extract.*'blocks\.3\.resid_post'.*"
                                         r"valid range 0\.\.2"):
        im.InferencePipeline(cfg).setup()


def test_generate_before_setup_raises_and_setup_is_idempotent(llama_dir):
    pipe = im.InferencePipeline(im.InferenceConfig(model_path=str(llama_dir)))
    assert not pipe.is_setup
    with pytest.raises(RuntimeError, match=r"setup\(\)"):
        pipe.generate(PROMPTS)
    assert pipe.setup() is pipe
    loaded = pipe.model
    pipe.setup()
    assert pipe.model is loaded and pipe.is_setup
    with pytest.raises(TypeError, match="InferenceConfig"):
        im.InferencePipeline({"model_path": str(llama_dir)})


def test_missing_checkpoint_fails_at_setup(tmp_path):
    pipe = im.InferencePipeline(im.InferenceConfig(model_path=str(tmp_path / "missing")))
    with pytest.raises((FileNotFoundError, ValueError), match="missing"):
        pipe.setup()


@pytest.mark.parametrize("prompts, error, message", [
    ([], ValueError, "prompts is empty"),
    ((), ValueError, "prompts is empty"),
    ("the cat", TypeError, r"pass \[text\]"),
    ([1, 2, 3], TypeError, r"prompts\[0\] is an int"),
    ([[1, 2], []], ValueError, "prompt 1 is empty"),
    ([[1, 2], [500]], ValueError, "prompt 1 has token id 500"),
    ([[1], [5] * 251], ValueError, "prompt 1 has 251 tokens.*max_new_tokens=6"),
])
def test_bad_prompts_raise_before_anything_is_written(llama_dir, tmp_path, prompts, error,
                                                      message):
    pipe = _extracting(llama_dir, tmp_path / "acts")
    with pytest.raises(error, match=message):
        pipe.generate(prompts, progress=False)
    assert not (tmp_path / "acts").exists()


def test_public_names():
    for name in ("InferenceConfig", "InferencePipeline", "activations"):
        assert name in im.__all__
    assert im.activations.load_activations is load_activations
