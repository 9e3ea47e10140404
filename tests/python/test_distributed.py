"""backend="ray" against backend="local" on the same prompts: results, sampled tokens,
activations and index; order with uneven batches; a worker killed in a batch; a batch that fails
every retry; the warnings and errors of fitting workers to the cluster; Ray stays optional.

One local Ray (2 CPUs) serves the module; each test starts and closes its own workers. The model
is a tiny random Llama written by transformers (_tiny_models.save_llama).
"""
import dataclasses
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest

import infermode as im
from infermode.activations import load_activations, load_index
from infermode.distributed import RayBackend, plan_workers

ray = pytest.importorskip("ray", reason="needs Ray: pip install 'infermode[dev]'")

MAX_NEW = 5
LAYERS = (0, "final_norm")
# 7 prompts in batches of 2: 4 batches, the last of 1, for 2 workers.
PROMPTS = [np.random.default_rng(3).integers(4, 96, size=n).tolist()
           for n in (5, 1, 9, 3, 12, 7, 2)]
SAMPLING = dict(temperature=1.2, top_k=20, top_p=0.95, seed=5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from _tiny_models import save_llama

    return save_llama(tmp_path_factory.mktemp("ray_llama"), 96, 64, 3, 256, seed=11)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (started once: it takes seconds on 2 cores)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")  # no token file for a throwaway test cluster
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


def _config(checkpoint, directory=None, **kwargs):
    kwargs.setdefault("max_new_tokens", MAX_NEW)
    kwargs.setdefault("batch_size", 2)
    if directory is not None:
        kwargs.update(extract_activations=True, layers_to_extract=LAYERS,
                      activations_dir=str(directory))
    return im.InferenceConfig(model_path=str(checkpoint), **kwargs)


def _run(config, prompts, progress=False):
    with im.InferencePipeline(config) as pipe:
        return pipe.generate(prompts, progress=progress)


def _ray(config, workers=2, **kwargs):
    return dataclasses.replace(config, backend="ray", workers=workers, **kwargs)


def _assert_same_activations(ray_dir, local_dir, skip=()):
    ours, theirs = load_activations(ray_dir), load_activations(local_dir)
    keep = np.setdiff1d(np.arange(len(PROMPTS)), skip)
    assert list(ours) == list(theirs)
    for name in theirs:
        np.testing.assert_array_equal(ours[name][keep], theirs[name][keep])
    for rows in ("prompt_lengths", "num_generated", "valid_steps", "token_ids"):
        np.testing.assert_array_equal(getattr(ours, rows)[keep], getattr(theirs, rows)[keep])
    return ours


# ------------------------------------------------------------------------------ results


def test_ray_gives_the_local_results_sampled_tokens_and_activations(checkpoint, tmp_path):
    texts = [" ".join(f"w{i}" for i in p) for p in PROMPTS]  # the word-level tokenizer's ids
    local_cfg = _config(checkpoint, tmp_path / "local", capture_positions="all", **SAMPLING)
    local = _run(local_cfg, texts)
    out = _run(_ray(_config(checkpoint, tmp_path / "ray", capture_positions="all", **SAMPLING)),
               texts)

    assert out.results == local.results  # tokens, texts, shard files and rows, in prompt order
    assert out.texts is not None and out.failed == [] and out.failed_indexes == []
    assert out.activation_index == tmp_path / "ray" / "index.json"
    _assert_same_activations(tmp_path / "ray", tmp_path / "local")
    ours, theirs = load_index(tmp_path / "ray"), load_index(tmp_path / "local")
    assert ours["shards"] == theirs["shards"] and len(ours["shards"]) == 4
    assert ours["seed"] == theirs["seed"] == 5 and ours["failed"] == []
    assert ours["config"]["backend"] == "ray" and ours["config"]["workers"] == 2
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == \
        sorted(p.name for p in (tmp_path / "local").iterdir())


def test_order_is_kept_when_batches_finish_out_of_order(checkpoint, monkeypatch, capsys):
    # Uneven batches (3, 3, 1 prompts of different lengths), and batch 0 made slow: the other
    # worker finishes batches 1 and 2 first.
    monkeypatch.setenv("INFERMODE_TEST_SLEEP_IN_SHARD", "0:1.5")
    finished = []
    real_run = RayBackend.run

    def recording_run(self, shards, seed, done):
        def record(outcome):
            finished.append(outcome.shard)
            done(outcome)

        return real_run(self, shards, seed, record)

    monkeypatch.setattr(RayBackend, "run", recording_run)
    config = _config(checkpoint, batch_size=3)
    out = _run(_ray(config), PROMPTS, progress=True)
    assert finished == [1, 2, 0]
    assert f"{len(PROMPTS)}/{len(PROMPTS)}" in capsys.readouterr().err  # one bar, all workers
    assert [r.index for r in out] == list(range(len(PROMPTS)))
    assert out.results == _run(config, PROMPTS).results


# ------------------------------------------------------------------------------ faults


def test_a_worker_killed_in_its_batch_is_restarted_and_the_batch_redone(checkpoint, tmp_path,
                                                                        monkeypatch):
    local = _run(_config(checkpoint, tmp_path / "local"), PROMPTS)
    marker = tmp_path / "exited-once"
    monkeypatch.setenv("INFERMODE_TEST_EXIT_IN_SHARD", f"1:{marker}")
    out = _run(_ray(_config(checkpoint, tmp_path / "ray")), PROMPTS)

    assert marker.exists(), "the worker should have exited in batch 1"
    assert out.results == local.results and out.failed == []
    index = load_index(tmp_path / "ray")
    written = [i for shard in index["shards"] for i in shard["prompt_indexes"]]
    assert written == list(range(len(PROMPTS))), "every prompt once, in order"
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == [
        "index.json", *(f"shard-{n:05d}.safetensors" for n in range(4))]
    _assert_same_activations(tmp_path / "ray", tmp_path / "local")


def test_a_batch_that_fails_every_retry_is_reported_and_the_rest_kept(checkpoint, tmp_path,
                                                                      monkeypatch, caplog):
    local = _run(_config(checkpoint, tmp_path / "local"), PROMPTS)
    monkeypatch.setenv("INFERMODE_TEST_EXIT_IN_SHARD", "2")  # on every attempt
    with caplog.at_level(logging.WARNING, logger="infermode"):
        out = _run(_ray(_config(checkpoint, tmp_path / "ray"), max_retries=1), PROMPTS)

    assert [(f.shard, f.prompt_indexes, f.prompt_lengths) for f in out.failed] == [
        (2, [4, 5], [12, 7])]
    assert "died on each of 2 attempt(s)" in out.failed[0].error
    assert out.failed_indexes == [4, 5]
    assert [r.index for r in out] == list(range(len(PROMPTS)))
    for result, expected in zip(out, local):
        if result.index in (4, 5):
            assert result.token_ids == [] and result.error == out.failed[0].error
            assert result.shard is None and result.prompt_length == expected.prompt_length
        else:
            assert result == expected
    assert "1 of 4 batch(es) failed on every retry" in caplog.text
    assert "batch 2 (prompts 4-5)" in caplog.text

    index = load_index(tmp_path / "ray")
    assert [s["file"] for s in index["shards"]] == [
        "shard-00000.safetensors", "shard-00001.safetensors", "shard-00003.safetensors"]
    assert [(f["shard"], f["prompt_indexes"]) for f in index["failed"]] == [(2, [4, 5])]
    assert index["num_prompts"] == len(PROMPTS)
    assert not (tmp_path / "ray" / "shard-00002.safetensors").exists()
    acts = _assert_same_activations(tmp_path / "ray", tmp_path / "local", skip=[4, 5])
    assert acts.failed_prompts.tolist() == [4, 5]
    assert not acts["final_norm"][[4, 5]].any() and not acts.valid_mask()[[4, 5]].any()


def test_resume_redoes_only_the_failed_batch(checkpoint, tmp_path, monkeypatch):
    """A batch that failed every retry is the one thing resume=True computes again; the other
    shards stay as they are, and the index becomes the local run's."""
    local = _run(_config(checkpoint, tmp_path / "local", **SAMPLING), PROMPTS)
    config = _ray(_config(checkpoint, tmp_path / "ray", **SAMPLING), max_retries=0)
    with monkeypatch.context() as patch:
        patch.setenv("INFERMODE_TEST_EXIT_IN_SHARD", "2")
        assert _run(config, PROMPTS).failed_indexes == [4, 5]
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("shard-*")}
    assert sorted(kept) == [f"shard-{n:05d}.safetensors" for n in (0, 1, 3)]

    with im.InferencePipeline(config) as pipe:
        out = pipe.generate(PROMPTS, resume=True, progress=False)
    assert out.results == local.results and out.failed == []
    assert {name: (tmp_path / "ray" / name).stat().st_mtime_ns for name in kept} == kept
    ours, theirs = load_index(tmp_path / "ray"), load_index(tmp_path / "local")
    for key in ("shards", "failed", "num_prompts", "seed", "run"):
        assert ours[key] == theirs[key], key
    _assert_same_activations(tmp_path / "ray", tmp_path / "local")


def test_a_worker_lost_for_good_is_replaced(checkpoint, monkeypatch):
    # Batch 0 is slow; when batch 1 is back, its worker is killed for good (no restart): batch 0
    # is reported and a new worker takes the remaining batches.
    monkeypatch.setenv("INFERMODE_TEST_SLEEP_IN_SHARD", "0:3")
    real_run = RayBackend.run
    before = []

    def killing_run(self, shards, seed, done):
        before.extend(self._actors)

        def kill_then_done(outcome):
            if outcome.shard == 1:
                ray.kill(self._actors[1])  # the worker that took batch 0 (the first one popped)
            done(outcome)

        return real_run(self, shards, seed, kill_then_done)

    monkeypatch.setattr(RayBackend, "run", killing_run)
    with im.InferencePipeline(_ray(_config(checkpoint))) as pipe:
        out = pipe.generate(PROMPTS, progress=False)
        after = list(pipe._backend._actors)
    assert [(f.shard, f.prompt_indexes) for f in out.failed] == [(0, [0, 1])]
    assert "ActorDiedError" in out.failed[0].error
    assert after[0] == before[0] and after[1] != before[1]
    local = _run(_config(checkpoint), PROMPTS)
    assert out.results[2:] == local.results[2:]


def test_an_error_in_a_batch_stops_the_run_and_the_next_run_starts_new_workers(
        checkpoint, tmp_path, monkeypatch):
    # activations_dir missing where the workers write: as on a node without the shared file system.
    directory = tmp_path / "ray"
    real_call = RayBackend.call

    def call_then_remove_the_directory(self, step, *args):
        result = real_call(self, step, *args)
        if step == "start":
            shutil.rmtree(directory)
        return result

    with im.InferencePipeline(_ray(_config(checkpoint, directory))) as pipe:
        with monkeypatch.context() as patch:
            patch.setattr(RayBackend, "call", call_then_remove_the_directory)
            with pytest.raises(FileNotFoundError, match=r"ray does not exist on .*shared file "):
                pipe.generate(PROMPTS, progress=False)
        assert pipe.is_setup
        out = pipe.generate(PROMPTS, overwrite=True, progress=False)
    assert out.results == _run(_config(checkpoint, tmp_path / "local"), PROMPTS).results


# ------------------------------------------------------------------------------ fitting


def test_workers_beyond_the_cpus_or_the_batches_are_warned_and_reduced(checkpoint, caplog):
    config = _ray(_config(checkpoint), workers=3, threads_per_worker=1)
    with caplog.at_level(logging.WARNING, logger="infermode"):
        with im.InferencePipeline(config) as pipe:
            assert "workers=3 x threads_per_worker=1 asks for 3 CPUs; the Ray cluster has 2 " \
                   "CPUs (1 node(s)): using 2 worker(s) x 1 thread(s)" in caplog.text
            out = pipe.generate(PROMPTS[:1], progress=False)
    assert "2 worker(s) but 1 prompt(s) make only 1 batch(es) of batch_size=2: using 1 " \
           "worker(s)" in caplog.text
    assert out.results == _run(_config(checkpoint), PROMPTS[:1]).results


@pytest.mark.parametrize("workers, threads, cpus, expected, message", [
    (2, None, [2], (2, 1), None),
    (1, None, [2], (1, 2), None),
    (2, 1, [2], (2, 1), None),
    (4, 2, [2], (1, 2), "workers=4 x threads_per_worker=2 asks for 8 CPUs; the Ray cluster has "
                        "2 CPUs (1 node(s)): using 1 worker(s) x 2 thread(s)"),
    (2, 8, [4, 4], (2, 4), "asks for 16 CPUs; the Ray cluster has 8 CPUs (2 node(s), the "
                           "largest 4): using 2 worker(s) x 4 thread(s)"),
    (3, 2, [3, 3], (2, 2), "using 2 worker(s) x 2 thread(s)"),  # 6 CPUs, but 2 per node
    (5, None, [2, 2], (4, 1), "threads_per_worker=None, at least 1 each asks for 5 CPUs"),
])
def test_plan_workers(workers, threads, cpus, expected, message):
    *used, warning = plan_workers(workers, threads, cpus)
    assert tuple(used) == expected
    if message is None:
        assert warning is None
    else:
        assert message in warning


def test_a_cluster_without_cpus_raises():
    with pytest.raises(RuntimeError, match="no CPUs"):
        plan_workers(1, None, [0])


CONFIG_ERRORS = [
    (dict(backend="ray", workers=0), "workers must be an int >= 1"),
    (dict(backend="ray", threads_per_worker=0), "threads_per_worker must be"),
    (dict(backend="ray", threads_per_worker=-2), "threads_per_worker must be"),
    (dict(backend="ray", threads_per_worker=1.5), "threads_per_worker must be"),
    (dict(backend="ray", threads=2), "threads=2 is for backend='local'.*threads_per_worker"),
    (dict(backend="ray", ray_address=""), "ray_address must be"),
    (dict(backend="ray", max_retries=-1), "max_retries must be"),
    (dict(workers=2), "workers=2 needs backend='ray'"),
    (dict(threads_per_worker=2), "threads_per_worker=2 is for backend='ray'"),
    (dict(ray_address="auto"), "ray_address='auto' is for backend='ray'"),
]


@pytest.mark.parametrize("kwargs, message", CONFIG_ERRORS)
def test_impossible_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        im.InferenceConfig(model_path="some/model", **kwargs)


def test_a_worker_that_cannot_load_the_model_fails_setup(tmp_path):
    pipe = im.InferencePipeline(_ray(_config(tmp_path / "missing")))
    with pytest.raises(FileNotFoundError, match="missing does not exist") as caught:
        pipe.setup()
    assert type(caught.value) is FileNotFoundError, "the worker's error, not Ray's wrapper"
    assert not pipe.is_setup


# ------------------------------------------------------------------------------ optional


def test_ray_is_optional(checkpoint, monkeypatch):
    # backend="local" never imports Ray (a fresh interpreter: this one has imported it).
    code = ("import sys, infermode as im\n"
            f"cfg = im.InferenceConfig(model_path={str(checkpoint)!r}, max_new_tokens=2)\n"
            "im.InferencePipeline(cfg).setup().generate([[5, 6]], progress=False)\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    # Without Ray installed, backend="ray" says which extra to install.
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'infermode\[ray\]'"):
        im.InferencePipeline(_ray(_config(checkpoint))).setup()

