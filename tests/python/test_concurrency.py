"""One model called from several Python threads at once, several models in one process, and a
model loading while another generates: every caller gets what it would get alone.

A model holds no per-call state: each call makes its own KV cache and activations (in the
calling thread's arena), and the GIL is released around the C++ loop, so calls really overlap.
"""
import threading

import numpy as np
import pytest

from _tiny_models import save_llama, save_lora
from infermode.llm import CausalLM

CALLS_PER_THREAD = 3
THREADS = 3


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    first = save_llama(tmp_path_factory.mktemp("first"), 64, 64, 2, 128, seed=1)
    second = save_llama(tmp_path_factory.mktemp("second"), 80, 96, 3, 128, seed=2)
    adapter = tmp_path_factory.mktemp("adapter")
    save_lora(first, adapter, seed=3)
    return first, second, adapter


def run_in_threads(jobs):
    """Runs each callable on its own thread, all released at once; returns their results, and
    re-raises the first error."""
    start = threading.Barrier(len(jobs))
    results, errors = [None] * len(jobs), []

    def work(i, job):
        try:
            start.wait()
            results[i] = job()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a call did not finish"
    if errors:
        raise errors[0]
    return results


def prompt(i):
    rng = np.random.default_rng(i)
    return rng.integers(4, 60, size=int(rng.integers(3, 12))).tolist()


def test_one_model_from_several_threads(checkpoints):
    model = CausalLM.from_pretrained(checkpoints[0], threads=2)
    calls = [(t, c) for t in range(THREADS) for c in range(CALLS_PER_THREAD)]
    alone = {(t, c): model.generate(prompt(10 * t + c), max_new_tokens=8, stop=[],
                                    capture=[1]) for t, c in calls}

    def caller(t):
        def run():
            return [model.generate(prompt(10 * t + c), max_new_tokens=8, stop=[], capture=[1])
                    for c in range(CALLS_PER_THREAD)]
        return run

    together = run_in_threads([caller(t) for t in range(THREADS)])
    for t, outs in enumerate(together):
        for c, out in enumerate(outs):
            assert out.token_ids == alone[t, c].token_ids
            np.testing.assert_array_equal(out.activations["blocks.1.resid_post"],
                                          alone[t, c].activations["blocks.1.resid_post"])


def test_switching_adapters_while_another_thread_runs(checkpoints):
    """A call applies the adapter active when it starts, whole: with one thread switching
    adapters while another runs, every result is exactly the adapted or the base model's."""
    first, _, adapter = checkpoints
    model = CausalLM.from_pretrained(first, adapter=adapter, merge=False, threads=1)
    ids = np.array([prompt(1)])
    adapted = model.forward(ids)
    model.set_adapter(None)
    base = model.forward(ids)
    assert np.abs(adapted - base).max() > 1e-3

    def switch():
        for i in range(200):
            model.set_adapter("default" if i % 2 else None)

    outs, _ = run_in_threads([lambda: [model.forward(ids) for _ in range(20)], switch])
    seen = [np.array_equal(out, adapted) or np.array_equal(out, base) for out in outs]
    assert all(seen)


def test_several_models_and_loading_while_generating(checkpoints):
    first, second, _ = checkpoints
    a = CausalLM.from_pretrained(first, threads=1)
    b = CausalLM.from_pretrained(second, dtype="q8_0", threads=1)
    want_a = a.generate(prompt(5), max_new_tokens=16, stop=[]).token_ids
    want_b = b.generate(prompt(6), max_new_tokens=16, stop=[]).token_ids
    got = run_in_threads([
        lambda: a.generate(prompt(5), max_new_tokens=16, stop=[]).token_ids,
        lambda: b.generate(prompt(6), max_new_tokens=16, stop=[]).token_ids,
        lambda: CausalLM.from_pretrained(second, dtype="q4_0", threads=1),
    ])
    assert got[0] == want_a and got[1] == want_b
    loaded = got[2]
    assert loaded.generate(prompt(6), max_new_tokens=4, stop=[]).token_ids == \
        CausalLM.from_pretrained(second, dtype="q4_0").generate(
            prompt(6), max_new_tokens=4, stop=[]).token_ids
