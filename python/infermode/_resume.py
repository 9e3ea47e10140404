"""What ``InferencePipeline.generate(resume=True)`` needs: the settings that decide a run's files,
and the shards an earlier run with the same settings left in ``activations_dir``.

A run's settings (:func:`run_settings`) are everything that changes what its shards hold: the
model (its path, adapter, architecture and the dtype it was loaded in), a digest of the prompts'
token ids, the batch size (which cuts the prompts into shards), ``max_new_tokens``, sampling and
its seed, and what is captured where. Every shard records them in its metadata and the index
records them too; threads, workers and the backend do not count (any of them gives the same
files). :func:`resumed_shards` keeps a shard only if its settings are the new run's and its rows
are the batch the new run would write there; anything else stops the run with a ValueError that
says what differs, so a run is never stitched together from two.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from infermode.activations import INDEX_FILE, ShardContents, load_index, read_shard

if TYPE_CHECKING:  # pragma: no cover
    from infermode.llm import CausalLM
    from infermode.pipeline import InferenceConfig, Shard

__all__ = ["resumed_shards", "run_settings"]

_FIX = ("pass overwrite=True to replace that run, or choose another activations_dir")


def run_settings(config: "InferenceConfig", model: "CausalLM", shards: Sequence["Shard"],
                 seed: Optional[int]) -> Dict[str, Any]:
    """The settings of a run over ``shards`` (as JSON would give them back)."""
    digest = hashlib.sha256()
    count = 0
    for shard in shards:
        for prompt in shard.prompts:
            # The length first, so [1, 2] + [3] and [1] + [2, 3] differ.
            digest.update(struct.pack("<I", len(prompt)))
            digest.update(np.asarray(prompt, dtype="<i4").tobytes())
            count += 1
    mc = model.config
    settings = {
        "model_path": os.path.abspath(config.model_path),
        "adapter": None if config.adapter is None else os.path.abspath(config.adapter),
        "model": {"model_type": mc.model_type, "hidden_size": mc.hidden_size,
                  "num_hidden_layers": mc.num_hidden_layers, "vocab_size": mc.vocab_size},
        "model_dtype": model.dtype,
        "prompts": {"count": count, "sha256": digest.hexdigest()},
        "batch_size": config.batch_size,
        "max_new_tokens": config.max_new_tokens,
        "capture_names": list(config.capture_names),
        "capture_positions": config.capture_positions,
        "temperature": config.temperature,
        "top_k": config.top_k,
        "top_p": config.top_p,
        # Greedy decoding ignores the seed: it must not make two equal runs differ.
        "seed": seed if config.temperature > 0 else None,
    }
    return json.loads(json.dumps(settings))


def resumed_shards(directory: Path, found: Mapping[int, Path], shards: Sequence["Shard"],
                   settings: Dict[str, Any], capture_names: Sequence[str],
                   seed_given: bool) -> Tuple[Dict[str, Any], Dict[int, ShardContents], bool]:
    """Checks what an earlier run left in ``directory`` (``found``: its shards by number) against
    this run: returns (the settings to run with, the contents of the shards to keep by batch
    number, whether the index is there and current). Without ``seed_given`` the recorded seed is
    taken, so an unseeded sampling run resumes with the seed it drew."""
    sources: List[Tuple[str, Optional[Dict[str, Any]]]] = []
    index_there = (directory / INDEX_FILE).is_file()
    if index_there:
        sources.append((str(directory / INDEX_FILE), load_index(directory).get("run")))
    contents = {number: read_shard(path, capture_names) for number, path in sorted(found.items())}
    sources += [(str(found[number]), c.run) for number, c in contents.items()]
    for where, recorded in sources:
        if recorded is None:
            raise ValueError(f"resume=True: {where} records no run settings (written by an "
                             "older infermode, or by `infermode generate --out`), so it cannot "
                             f"be checked against this run; {_FIX}")
    if sources and not seed_given:
        settings = {**settings, "seed": sources[0][1].get("seed")}  # type: ignore[union-attr]
    for where, recorded in sources:
        differences = _differences(recorded, settings)  # type: ignore[arg-type]
        if differences:
            raise ValueError(f"resume=True: {where} was written by a run with other settings "
                             f"({'; '.join(differences)}); {_FIX}")
    planned = {shard.number: shard for shard in shards}
    for number, c in contents.items():
        missing = [n for n in capture_names if n not in c.record["shapes"]]
        if missing:
            raise ValueError(f"resume=True: {found[number]} has no tensor {missing[0]!r}")
        shard = planned.get(number)
        lengths = None if shard is None else [len(p) for p in shard.prompts]
        if shard is None or c.record["prompt_indexes"] != shard.indexes \
                or c.record["prompt_lengths"] != lengths:
            raise ValueError(f"resume=True: {found[number]} holds prompts "
                             f"{c.record['prompt_indexes'][:8]}, not this run's batch {number}; "
                             f"{_FIX}")
    return settings, contents, index_there


def _differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    out = []
    for key in sorted(set(recorded) | set(current)):
        there, now = recorded.get(key), current.get(key)
        if there != now:
            out.append(f"{key}: {_show(key, there)} there, {_show(key, now)} now")
    return out


def _show(key: str, value: Any) -> str:
    if key == "prompts" and isinstance(value, Mapping):
        return f"{value.get('count')} prompts (token ids sha256 {str(value.get('sha256'))[:12]})"
    return repr(value)
