"""A short soak: 500 generations in one process leave RSS flat after warm-up (benchmarks/soak.py
runs the long one on the bundled model and plots it).

A tiny model keeps it fast; what could leak is per call whatever the model's size: the output
and capture arrays handed to Python, the KV cache and arena of each call, the sampler, the GIL
and signal hooks of the C++ loop. Calls mix prompt lengths, greedy and sampled decoding and
captures, streaming and an unmerged adapter, so each of those paths runs hundreds of times.
"""
import gc

import pytest

from infermode.llm import CausalLM

psutil = pytest.importorskip("psutil", reason="psutil reads RSS (pip install psutil)")

WARMUP = 100
GENERATIONS = 500
GROWTH_LIMIT = 4 * 2**20  # bytes


def _rss():
    gc.collect()
    return psutil.Process().memory_info().rss


def test_rss_is_flat_over_500_generations(lora_base, lora_adapter):
    model = CausalLM.from_pretrained(lora_base, adapter=lora_adapter, merge=False, threads=1)
    prompts = [[1, 5 + i, 9, 17 + i, 30][: 1 + i % 5] for i in range(10)]

    def generation(i):
        model.set_adapter("default" if i % 3 == 0 else None)
        if i % 7 == 0:
            return [t.token_id for t in model.generate(prompts[i % 10], max_new_tokens=4,
                                                       stream=True)]
        return model.generate(prompts[i % 10], max_new_tokens=4, temperature=0.7 * (i % 2),
                              seed=i, capture=["final_norm", 1] if i % 4 == 0 else None)

    for i in range(WARMUP):
        generation(i)
    after_warmup = _rss()
    for i in range(WARMUP, GENERATIONS):
        generation(i)
    growth = _rss() - after_warmup
    assert growth < GROWTH_LIMIT, f"RSS grew {growth / 2**20:.2f} MiB after warm-up"
