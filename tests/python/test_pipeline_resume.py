"""Interrupted pipeline runs and ``generate(resume=True)``: a real Ctrl-C (SIGINT sent to a
process running a pipeline) stops it within the batch in progress, leaves the model usable and
only whole shards behind; resuming computes only the batches without a shard and writes the index
an uninterrupted run writes; a run with other settings is refused and nothing is touched.

The model is a tiny random Llama (_tiny_models.save_llama) without an end-of-sequence token, so
every batch generates all its tokens and takes about the same time.
"""
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from safetensors import safe_open

import infermode as im
from infermode.activations import ActivationWriter, load_index, read_shard
from infermode.llm import CausalLM

MAX_NEW = 2000  # a batch of 2 takes over half a second: long enough to stop inside one
PROMPTS = [np.random.default_rng(5).integers(4, 96, size=n).tolist()
           for n in (5, 1, 9, 3, 12, 7, 2, 6)]  # 4 batches of 2
LAYERS = (1, "final_norm")
SAMPLING = dict(temperature=0.9, top_k=20)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from _tiny_models import save_llama

    return save_llama(tmp_path_factory.mktemp("resume_llama"), 96, 128, 4, 4096, seed=7, eos=None)


def _config(checkpoint, directory, **kwargs):
    # One thread: on a busy machine the spinning barriers between ops of several threads make a
    # batch's time erratic, and this test measures how soon a run stops.
    kwargs = {"batch_size": 2, "max_new_tokens": MAX_NEW, "layers_to_extract": LAYERS,
              "threads": 1, **SAMPLING, "seed": 11, **kwargs}
    return im.InferenceConfig(model_path=str(checkpoint), extract_activations=True,
                              activations_dir=str(directory), **kwargs)


def _run(config, prompts=PROMPTS, **kwargs):
    with im.InferencePipeline(config) as pipe:
        return pipe.generate(prompts, progress=False, **kwargs)


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


def _snapshot(directory):
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(directory.iterdir())}


def _tensors(path):
    with safe_open(str(path), framework="numpy") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def _assert_same_shards(ours, theirs):
    assert _files(ours) == _files(theirs)
    for name in _files(theirs):
        if name.endswith(".safetensors"):
            mine, other = _tensors(ours / name), _tensors(theirs / name)
            assert mine.keys() == other.keys()
            for key in other:
                np.testing.assert_array_equal(mine[key], other[key])


def _without_created(index):
    return {k: v for k, v in index.items() if k != "created"}


# A pipeline run in its own process, as a user runs one: Ctrl-C is a SIGINT to that process.
CHILD = textwrap.dedent("""
    import json, signal, sys, time
    import infermode as im

    # What Python does at start unless SIGINT was ignored by whoever started it (a background
    # job): then Ctrl-C could not reach the pipeline at all.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    settings = json.loads(sys.argv[1])
    pipe = im.InferencePipeline(im.InferenceConfig(**settings["config"])).setup()
    try:
        pipe.generate(settings["prompts"], progress=False)
        print(json.dumps({"finished": True}))
    except KeyboardInterrupt:
        caught = time.monotonic()
        after = pipe.model.generate(settings["prompts"][0], max_new_tokens=8).token_ids
        print(json.dumps({"caught": caught, "after": after}))
""")


def test_ctrl_c_stops_a_pipeline_run_and_resume_finishes_it_as_if_never_stopped(checkpoint,
                                                                                tmp_path):
    run = tmp_path / "run"
    config = _config(checkpoint, run)
    clean = _run(config)
    clean_dir = run.rename(tmp_path / "clean")  # the interrupted run writes to the same path

    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps({"config": fields, "prompts": PROMPTS})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 120
        while not (run / "shard-00000.safetensors").exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never wrote its first shard"
            time.sleep(0.005)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)  # batch 1 has just started
        stdout, stderr = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert "caught" in report, "the run finished before Ctrl-C reached it"
    # Stopped inside batch 1 (a batch takes a few tenths of a second; a token well under 1 ms).
    assert report["caught"] - sent < 0.25
    # Only the whole shard of batch 0: no half file, no temporary, no index.
    assert _files(run) == ["shard-00000.safetensors"]
    np.testing.assert_array_equal(_tensors(run / "shard-00000.safetensors")["final_norm"],
                                  _tensors(clean_dir / "shard-00000.safetensors")["final_norm"])
    # The model the interrupted process holds still gives the right answer.
    assert report["after"] == CausalLM.from_pretrained(checkpoint).generate(
        PROMPTS[0], max_new_tokens=8).token_ids

    kept = _snapshot(run)
    computed = []
    with im.InferencePipeline(config) as pipe:
        real_generate = pipe.model.generate

        def counting(prompts, **kwargs):
            computed.append(kwargs["stream_offset"])
            return real_generate(prompts, **kwargs)

        pipe.model.generate = counting
        resumed = pipe.generate(PROMPTS, resume=True, progress=False)
    assert computed == [2, 4, 6]  # batches 1-3; batch 0 is read back from its shard
    after = _snapshot(run)
    assert all(after[name] == kept[name] for name in kept)  # batch 0's shard was not rewritten
    assert resumed.results == clean.results  # tokens, texts, shard files and rows
    assert _without_created(load_index(run)) == _without_created(load_index(clean_dir))
    _assert_same_shards(run, clean_dir)


def test_an_unseeded_sampling_run_resumes_with_the_seed_it_drew(checkpoint, tmp_path,
                                                                monkeypatch):
    config = _config(checkpoint, tmp_path / "run", seed=None, max_new_tokens=6)
    with im.InferencePipeline(config) as pipe:
        real_generate, calls = pipe.model.generate, []

        def fail_in_batch_2(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real_generate(*args, **kwargs)

        monkeypatch.setattr(pipe.model, "generate", fail_in_batch_2)
        with pytest.raises(KeyboardInterrupt):
            pipe.generate(PROMPTS, progress=False)
        monkeypatch.undo()
        drawn = read_shard(tmp_path / "run" / "shard-00000.safetensors", ()).run["seed"]
        resumed = pipe.generate(PROMPTS, resume=True, progress=False)
    assert load_index(tmp_path / "run")["seed"] == drawn
    seeded = _run(dataclasses.replace(config, seed=drawn, activations_dir=str(tmp_path / "b")))
    assert resumed.token_ids == seeded.token_ids


def test_resuming_a_finished_run_computes_nothing_and_keeps_its_index(checkpoint, tmp_path):
    config = _config(checkpoint, tmp_path / "run", max_new_tokens=6)
    first = _run(config)
    before = _snapshot(tmp_path / "run")
    assert _run(config, resume=True).results == first.results
    assert _snapshot(tmp_path / "run") == before


def test_resume_with_nothing_there_is_a_plain_run(checkpoint, tmp_path):
    config = _config(checkpoint, tmp_path / "new", max_new_tokens=6)
    assert _run(config, resume=True).results == _run(
        dataclasses.replace(config, activations_dir=str(tmp_path / "plain"))).results


# Each changes one setting of the interrupted run; the error names it.
OTHER_SETTINGS = {
    "max_new_tokens": dict(max_new_tokens=7),
    "batch_size": dict(batch_size=3),
    "capture_names": dict(layers_to_extract=(0, "final_norm")),
    "capture_positions": dict(capture_positions="all"),
    "temperature": dict(temperature=0.5),
    "seed": dict(seed=12),
    "model_dtype": dict(dtype="bfloat16"),
}


@pytest.mark.parametrize("setting", [*OTHER_SETTINGS, "prompts", "model_path"])
def test_resume_refuses_a_run_with_other_settings(checkpoint, tmp_path, setting):
    directory = tmp_path / "run"
    config = _config(checkpoint, directory, max_new_tokens=6)
    _run(config)
    (directory / "index.json").unlink()  # as an interruption in the last batch leaves it
    (directory / "shard-00003.safetensors").unlink()
    before = _snapshot(directory)
    prompts = PROMPTS
    if setting == "prompts":
        prompts = PROMPTS[:-1] + [[5, 5, 5]]
    elif setting == "model_path":
        config = dataclasses.replace(
            config, model_path=str(shutil.copytree(checkpoint, tmp_path / "other")))
    else:
        config = dataclasses.replace(config, **OTHER_SETTINGS[setting])
    with pytest.raises(ValueError, match=rf"resume=True: .*shard-00000\.safetensors was written "
                                         rf"by a run with other settings \({setting}: "
                                         r".*overwrite=True"):
        _run(config, prompts, resume=True)
    assert _snapshot(directory) == before


def test_resume_refuses_shards_without_run_settings(checkpoint, tmp_path):
    # What `infermode generate --out` (or an older infermode) writes.
    writer = ActivationWriter(tmp_path, ["final_norm"], "generated", 6)
    writer.start()
    writer.add_batch([0, 1], [5, 1], [[4], [5]], {"final_norm": np.zeros((2, 6, 128))})
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"shard-00000\.safetensors records no run settings"):
        _run(_config(checkpoint, tmp_path, layers_to_extract=("final_norm",)), resume=True)
    assert _snapshot(tmp_path) == before


def test_resume_needs_activations_and_excludes_overwrite(checkpoint, tmp_path):
    config = _config(checkpoint, tmp_path / "run", max_new_tokens=6)
    with pytest.raises(ValueError, match="overwrite=True .* resume=True .* one of them"):
        _run(config, overwrite=True, resume=True)
    plain = im.InferenceConfig(model_path=str(checkpoint), max_new_tokens=6)
    with pytest.raises(ValueError, match="resume=True .* extract_activations=False"):
        _run(plain, resume=True)
