#!/usr/bin/env python3
"""What a LoRA adapter costs per token: the bundled SmolLM2-135M (Q4_1) decoding alone, with an
adapter merged at load, and with the same adapter kept apart (switchable).

    python benchmarks/lora.py                  # rank 16 on all seven projections, ~1 min
    python benchmarks/lora.py --rank 64 --quick

The adapter is made by PEFT (`get_peft_model` on a transformers Llama of the bundled model's
shape, random non-zero B, `save_pretrained`) under <out>/models/ and reused. Decode tokens/s per
variant = 64 / (t(1 + 64 new tokens) - t(1 new token)) for a 32-token prompt, so prefill cancels;
the variants run interleaved, --repeats times, and the report gives medians with min and max.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import infermode as im
from _machine import RESULTS, machine_info, write_report

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NEW_TOKENS = 64
PROMPT = list(range(100, 132))


def make_adapter(directory: Path, rank: int) -> Path:
    if (directory / "adapter_model.safetensors").is_file():
        return directory
    import peft
    import torch
    import transformers

    config = im.CausalLM.from_pretrained().config
    base = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim,
        tie_word_embeddings=True))
    model = peft.get_peft_model(base, peft.LoraConfig(r=rank, lora_alpha=2 * rank,
                                                      target_modules=PROJECTIONS))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.01)
    model.save_pretrained(directory)
    return directory


def decode_rate(model: im.CausalLM) -> float:
    def seconds(new: int) -> float:
        start = time.perf_counter()
        model.generate(PROMPT, max_new_tokens=new, stop=[])
        return time.perf_counter() - start

    seconds(4)  # warm
    return NEW_TOKENS / (seconds(1 + NEW_TOKENS) - seconds(1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    adapter = make_adapter(args.out / "models" / f"smollm2-lora-r{args.rank}", args.rank)
    load = dict(threads=args.threads, check_base_model=False)
    variants = {
        "base": im.CausalLM.from_pretrained(threads=args.threads),
        "merged": im.CausalLM.from_pretrained(adapter=adapter, **load),
        "unmerged": im.CausalLM.from_pretrained(adapter=adapter, merge=False, **load),
    }
    rates = {name: [] for name in variants}
    for _ in range(repeats):
        for name, model in variants.items():
            rates[name].append(decode_rate(model))
    base = statistics.median(rates["base"])
    results = []
    for name, values in rates.items():
        median = statistics.median(values)
        results.append({"variant": name, "decode_tok_s": median, "min": min(values),
                        "max": max(values), "vs_base": median / base})
        print(f"{name:>9}: {median:7.1f} tok/s (min {min(values):.1f}, max {max(values):.1f})"
              f"  {median / base:.2f}x base")
    factor_mb = variants["unmerged"]._adapters["default"].bytes / 1e6
    print(f"adapter factors: {factor_mb:.1f} MB float32, read once per token when kept apart")
    path = write_report(args.out, f"lora-r{args.rank}", "lora", machine_info(args.threads),
                        argv, settings={"rank": args.rank, "repeats": repeats,
                                        "new_tokens": NEW_TOKENS, "prompt_tokens": len(PROMPT),
                                        "factor_mb": factor_mb}, results=results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
