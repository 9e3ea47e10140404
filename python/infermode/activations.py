"""Captured activations on disk: safetensors shards plus a JSON index, and a reader for them.

:class:`~infermode.pipeline.InferencePipeline` writes one shard per batch and, when the run
finishes, ``index.json``; :func:`load_activations` reads them back in prompt order::

    acts = load_activations("runs/probe")
    acts["blocks.3.resid_post"].shape          # (num_prompts, steps, hidden), float32
    acts.num_generated[7], acts.valid_mask()   # how many steps of each row are real

Layout of ``activations_dir``::

    shard-00000.safetensors    one per batch, in prompt order (shard k holds batch k)
    shard-00001.safetensors
    index.json                 written last: its presence means the run completed

Each shard holds one float32 tensor ``[rows, steps, hidden]`` per capture name (``embed``,
``blocks.{i}.resid_post``, ``final_norm``) and, per row, ``prompt_index`` (global, int64),
``prompt_length``, ``num_generated`` and ``valid_steps`` (int32), and ``token_ids`` (int32
``[rows, max_new_tokens]``, -1 past the generated ones). A shard describes itself, so the shards of
an interrupted run can still be read one by one with ``safetensors``. Steps past ``valid_steps``
are zero (a sequence that stopped early, or a shorter prompt with ``capture_positions="all"``).

Every file is written to a hidden temporary file in the same directory and renamed over its final
name (``os.replace`` is atomic on one file system): a run interrupted at any point (an exception,
Ctrl-C) leaves only whole shards and no ``index.json``; a process killed outright may also leave one
hidden ``.*.tmp`` file, which no reader looks at (the run's end, or the next run, removes it).

A shard's metadata also records, under ``"run"``, the settings that decide the run's files (model,
dtype, prompts' digest, batch size, sampling, capture): a run started again with ``resume=True``
keeps the shards whose settings are its own and computes only the batches that have none
(:meth:`ActivationWriter.start`, :func:`read_shard`); the index records them too.

A distributed run (``backend="ray"``) writes the same files: each worker writes the shards of the
batches it ran, and the index lists them all. A batch whose worker died on every retry has no
shard; the index lists it under ``failed`` (its prompt indexes and the error), and
:func:`load_activations` gives its rows as zeros that ``valid_mask()`` leaves out. Nothing here
pickles.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_FILE",
    "ActivationWriter",
    "Activations",
    "ShardContents",
    "load_activations",
    "load_index",
    "read_shard",
    "valid_steps",
]

PathLike = Union[str, "os.PathLike[str]"]

logger = logging.getLogger(__name__)

FORMAT = "infermode.activations"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
ROW_TENSORS = ("prompt_index", "prompt_length", "num_generated", "valid_steps", "token_ids")

_SHARD = re.compile(r"^shard-(\d{5,})\.safetensors$")
# Temporary files are hidden and end in .tmp, so no glob for shards or the index can match one.
_TEMPORARY = re.compile(r"^\.(shard-\d{5,}\.safetensors|index\.json)\..*\.tmp$")


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def valid_steps(capture_positions: str, prompt_length: int, num_generated: int) -> int:
    """How many leading steps of a row hold real activations (the rest are zero).

    "generated": one per new token; "all": every prompt position and every generated token but
    the last (it is chosen, never fed back); "prompt_mean": the one mean.
    """
    if capture_positions == "generated":
        return num_generated
    if capture_positions == "all":
        return prompt_length + num_generated - 1
    if capture_positions == "prompt_mean":
        return 1
    raise ValueError(f"unknown capture_positions {capture_positions!r}")


# ---------------------------------------------------------------------------------- writing


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Calls ``write(temporary_path)``, flushes it to disk, then renames it to ``path``.

    The temporary file is removed if anything (KeyboardInterrupt included) interrupts the write.
    """
    # A fresh unused name rather than mkstemp: mkstemp's file is private (0600), and the writer
    # creates the file itself anyway, with the user's umask.
    temporary = str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        write(temporary)
        # safetensors writes its files private (0600); shards in a shared run directory should
        # get the permissions any other file would.
        os.chmod(temporary, 0o666 & ~_umask())
        # Without the fsync a crash after the rename could leave a whole-looking empty file.
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    """The process umask, read without changing it (os.umask can only set it, racing threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _index_text(index: Dict[str, Any]) -> str:
    """The index as JSON a person can read: one key per line, and one line per shard or failed
    batch (indented row lists would take one line per number)."""
    lists = ("failed", "shards")
    head = json.dumps({k: v for k, v in index.items() if k not in lists}, indent=1)
    tails = []
    for key in lists:
        items = ",\n  ".join(json.dumps(s, separators=(",", ":")) for s in index[key])
        tails.append(f' "{key}": [\n  {items}\n ]' if items else f' "{key}": []')
    return head[:-2] + ",\n" + ",\n".join(tails) + "\n}\n"


def _write_text(path: Path, text: str) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "x", encoding="utf-8") as f:
            f.write(text)

    _atomic_write(path, write)


def previous_run_files(directory: Path) -> List[Path]:
    """The files of an earlier run in ``directory``: its index, shards and leftover temporaries."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.name == INDEX_FILE or _SHARD.match(p.name) or _TEMPORARY.match(p.name))


@dataclass
class ActivationWriter:
    """Writes one shard per batch into ``directory`` and the index at the end.

        writer = ActivationWriter("runs/probe", ["final_norm"], "generated", max_new_tokens=16)
        writer.start(overwrite=False)
        writer.add_batch([0, 1], [5, 3], [[4, 9], [7]], {"final_norm": array})   # [2, 16, hidden]
        writer.finish({"model_path": "...", "hidden_size": 64})                 # -> index path

    ``start`` refuses a directory that holds another run (an index or shards, finished or not)
    unless ``overwrite=True``, which deletes those files (the index first, so the directory never
    looks like a finished run while old and new shards mix) and nothing else, or ``resume=True``,
    which keeps them and returns the shards found, for the caller to check and skip.
    """

    directory: Path
    capture_names: Sequence[str]
    capture_positions: str
    max_new_tokens: int
    shards: List[Dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.capture_names = tuple(self.capture_names)

    def start(self, overwrite: bool = False, resume: bool = False) -> Dict[int, Path]:
        """Prepares the directory; returns {batch number: path} of the shards already there
        (empty unless ``resume``, which changes nothing: :meth:`finish` removes temporaries)."""
        if overwrite and resume:
            raise ValueError("overwrite=True deletes the run in activations_dir and resume=True "
                             "continues it: pass one of them")
        previous = previous_run_files(self.directory)
        self.shards = []
        if resume:
            self.directory.mkdir(parents=True, exist_ok=True)
            matches = ((_SHARD.match(path.name), path) for path in previous)
            return {int(match.group(1)): path for match, path in matches if match}
        if previous and not overwrite:
            finished = "a finished run" if (self.directory / INDEX_FILE).exists() \
                else "an unfinished run (shards without index.json)"
            raise FileExistsError(
                f"activations_dir {self.directory} already holds {finished}: "
                f"{len(previous)} file(s), e.g. {previous[0].name}. Pass resume=True to "
                "generate() to continue it, overwrite=True to replace it, or choose another "
                "activations_dir")
        self.directory.mkdir(parents=True, exist_ok=True)
        index = self.directory / INDEX_FILE
        if index in previous:
            index.unlink()
        for path in previous:
            if path != index:
                path.unlink(missing_ok=True)
        return {}

    def add_batch(self, prompt_indexes: Sequence[int], prompt_lengths: Sequence[int],
                  token_ids: Sequence[Sequence[int]], activations: Mapping[str, np.ndarray]) -> str:
        """Writes the next shard; returns its file name."""
        record = self.write_shard(len(self.shards), prompt_indexes, prompt_lengths, token_ids,
                                  activations)
        self.shards.append(record)
        return record["file"]

    def write_shard(self, number: int, prompt_indexes: Sequence[int],
                    prompt_lengths: Sequence[int], token_ids: Sequence[Sequence[int]],
                    activations: Mapping[str, np.ndarray],
                    run: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Writes shard ``number`` (replacing a whole earlier copy, atomically) and returns its
        index entry without adding it to ``shards``: workers of a distributed run each write
        their batches' shards, and the run's driver collects the entries for :meth:`finish`.
        ``run``: the run's settings, recorded in the shard's metadata for ``resume=True``."""
        rows = len(prompt_indexes)
        if not rows == len(prompt_lengths) == len(token_ids):
            raise ValueError(f"add_batch: {rows} prompt indexes, {len(prompt_lengths)} prompt "
                             f"lengths and {len(token_ids)} token lists; expected one each per row")
        steps = [valid_steps(self.capture_positions, p, len(t))
                 for p, t in zip(prompt_lengths, token_ids)]
        padded_ids = np.full((rows, self.max_new_tokens), -1, dtype=np.int32)
        for row, ids in enumerate(token_ids):
            padded_ids[row, :len(ids)] = ids
        tensors: Dict[str, np.ndarray] = {
            "prompt_index": np.asarray(prompt_indexes, dtype=np.int64),
            "prompt_length": np.asarray(prompt_lengths, dtype=np.int32),
            "num_generated": np.asarray([len(t) for t in token_ids], dtype=np.int32),
            "valid_steps": np.asarray(steps, dtype=np.int32),
            "token_ids": padded_ids,
        }
        for name in self.capture_names:
            array = np.ascontiguousarray(activations[name], dtype=np.float32)
            if array.ndim != 3 or array.shape[0] != rows:
                raise ValueError(f"activation {name!r} has shape {array.shape}, expected "
                                 f"[{rows}, steps, hidden]")
            tensors[name] = array
        name = shard_name(number)
        metadata = {"format": FORMAT, "version": str(FORMAT_VERSION),
                    "capture_positions": self.capture_positions}
        if run is not None:
            metadata["run"] = json.dumps(run, sort_keys=True)
        _atomic_write(self.directory / name, lambda path: save_file(tensors, path, metadata))
        return _record(name, tensors, {n: tensors[n].shape for n in self.capture_names})

    def finish(self, header: Mapping[str, Any], failed: Sequence[Mapping[str, Any]] = ()) -> Path:
        """Writes ``index.json`` (``header`` merged into it) over ``shards`` and returns its path.

        ``failed``: the batches that have no shard, each ``{"shard": number, "prompt_indexes":
        [...], "prompt_lengths": [...], "error": "..."}``; their prompts count in ``num_prompts``.
        First removes what killed writers left behind: hidden temporaries, and the shard file of a
        failed batch that an attempt wrote before its worker died, so the directory holds exactly
        the files the index lists.
        """
        failed = [dict(f) for f in failed]
        for path in previous_run_files(self.directory):
            if _TEMPORARY.match(path.name):
                path.unlink(missing_ok=True)
        for entry in failed:
            (self.directory / shard_name(entry["shard"])).unlink(missing_ok=True)
        index = {"format": FORMAT, "version": FORMAT_VERSION, **header,
                 "capture_names": list(self.capture_names),
                 "capture_positions": self.capture_positions,
                 "dtype": "float32",
                 "max_new_tokens": self.max_new_tokens,
                 "num_prompts": sum(len(s["prompt_indexes"]) for s in [*self.shards, *failed]),
                 "row_tensors": list(ROW_TENSORS),
                 "failed": failed,
                 "shards": self.shards}
        path = self.directory / INDEX_FILE
        _write_text(path, _index_text(index))
        return path


def _record(name: str, rows: Mapping[str, np.ndarray],
            shapes: Mapping[str, Sequence[int]]) -> Dict[str, Any]:
    """A shard's entry in the index, from its row tensors and the shapes of its activations."""
    return {
        "file": name,
        "prompt_indexes": [int(i) for i in rows["prompt_index"]],
        "prompt_lengths": [int(n) for n in rows["prompt_length"]],
        "num_generated": [int(n) for n in rows["num_generated"]],
        "valid_steps": [int(n) for n in rows["valid_steps"]],
        "shapes": {n: [int(d) for d in shape] for n, shape in shapes.items()},
    }


@dataclass(frozen=True)
class ShardContents:
    """What :func:`read_shard` finds in a shard: its index entry, the new tokens of each row,
    and the settings of the run that wrote it (None for a shard written without them)."""

    record: Dict[str, Any]
    token_ids: List[List[int]]
    run: Optional[Dict[str, Any]]


def read_shard(path: Path, capture_names: Sequence[str]) -> ShardContents:
    """Reads back a whole shard's entry, tokens and run settings (not its activations). The row
    tensors must be there (a ValueError names the file); of ``capture_names``, the entry's
    ``shapes`` has those the shard holds, for the caller to check once it knows whose shard it is.
    """
    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = set(f.keys())
            missing = [n for n in ROW_TENSORS if n not in keys]
            if missing:
                raise ValueError(f"{path} has no tensor {missing[0]!r}")
            rows = {n: f.get_tensor(n) for n in ROW_TENSORS}
            shapes = {n: list(f.get_slice(n).get_shape()) for n in capture_names if n in keys}
            run_text = (f.metadata() or {}).get("run")
    except ValueError:
        raise
    except Exception as exc:  # the safetensors library raises its own SafetensorError
        raise ValueError(f"{path} could not be read as a shard: {exc}") from None
    count = len(rows["prompt_index"])
    for name, shape in shapes.items():
        if len(shape) != 3 or shape[0] != count:
            raise ValueError(f"{path}: tensor {name!r} has shape {shape}, expected "
                             f"[{count}, steps, hidden]")
    try:
        run = json.loads(run_text) if run_text is not None else None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: its 'run' metadata is not JSON: {exc}") from None
    tokens = [[int(t) for t in row if t >= 0] for row in rows["token_ids"]]
    return ShardContents(_record(path.name, rows, shapes), tokens, run)


# ---------------------------------------------------------------------------------- reading


class Activations(Mapping):
    """Activations of a whole run, in prompt order: a read-only mapping name -> float32 array
    ``[num_prompts, steps, hidden]``, with the run's ``index`` and per-prompt row information.

    ``steps`` is the longest any shard has; shorter shards are padded with zeros, like the steps of
    a sequence that stopped early. ``valid_mask()`` tells real steps from padding.
    ``failed_prompts``: the prompts of batches that failed in a distributed run (sorted indexes):
    their rows are zeros with no valid step.
    """

    def __init__(self, arrays: Dict[str, np.ndarray], index: Dict[str, Any],
                 rows: Dict[str, np.ndarray], failed_prompts: np.ndarray) -> None:
        self._arrays = arrays
        self.index = index
        self.failed_prompts = failed_prompts
        self.prompt_lengths: np.ndarray = rows["prompt_length"]
        self.num_generated: np.ndarray = rows["num_generated"]
        self.valid_steps: np.ndarray = rows["valid_steps"]
        self.token_ids: np.ndarray = rows["token_ids"]  # [num_prompts, max_new_tokens], -1 padded

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def valid_mask(self) -> np.ndarray:
        """bool ``[num_prompts, steps]``: True where a step holds a real activation."""
        steps = next(iter(self._arrays.values())).shape[1] if self._arrays else 0
        return np.arange(steps)[None, :] < self.valid_steps[:, None]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k!r}: {tuple(v.shape)}" for k, v in self._arrays.items())
        return f"Activations({{{shapes}}}, capture_positions={self.index['capture_positions']!r})"


def load_index(activations_dir: PathLike) -> Dict[str, Any]:
    """The parsed ``index.json`` of a finished run, checked for format and version.

        index = load_index("runs/probe"); index["capture_names"]
    """
    directory = Path(activations_dir)
    path = directory / INDEX_FILE
    if not path.is_file():
        shards = [p.name for p in previous_run_files(directory) if _SHARD.match(p.name)]
        if shards:
            raise FileNotFoundError(
                f"{directory} has {len(shards)} shard(s) but no {INDEX_FILE}: the run did not "
                "finish. Each shard describes its own rows (prompt_index, num_generated, ...) and "
                "can be read with safetensors.safe_open; or run the pipeline again")
        raise FileNotFoundError(f"{path} does not exist: not an activations directory")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} could not be read: {exc}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"{path} is not an infermode activations index (no format {FORMAT!r})")
    if index.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {index.get('version')!r}; this infermode "
                         f"reads version {FORMAT_VERSION}")
    return index


def load_activations(activations_dir: PathLike,
                     names: Optional[Sequence[str]] = None) -> Activations:
    """Reads a finished run's shards into one array per capture name, rows in prompt order.

    ``names``: only these capture names (default: all). The shards are checked against the index:
    a missing file, a missing tensor or a shape that differs raises.

        acts = load_activations("runs/probe", names=["final_norm"])
        acts["final_norm"][acts.valid_mask()]     # [real steps in total, hidden]
    """
    directory = Path(activations_dir)
    index = load_index(directory)
    available = list(index["capture_names"])
    wanted = available if names is None else list(names)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise KeyError(f"{unknown[0]!r} was not captured in {directory}; captured: {available}")
    count = int(index["num_prompts"])
    shards = index["shards"]
    steps = max((s["shapes"][n][1] for s in shards for n in available), default=0)
    hidden = int(index["hidden_size"])
    arrays = {n: np.zeros((count, steps, hidden), dtype=np.float32) for n in wanted}
    rows = {"prompt_length": np.zeros(count, np.int32), "num_generated": np.zeros(count, np.int32),
            "valid_steps": np.zeros(count, np.int32),
            "token_ids": np.full((count, int(index["max_new_tokens"])), -1, np.int32)}
    seen = np.zeros(count, dtype=bool)
    failed = np.asarray(sorted(i for f in index.get("failed", []) for i in f["prompt_indexes"]),
                        dtype=np.int64)
    if failed.size:
        if failed.min() < 0 or failed.max() >= count:
            raise ValueError(f"{INDEX_FILE} in {directory}: its failed batches list prompt "
                             f"indexes outside 0..{count - 1}")
        seen[failed] = True
        for entry in index["failed"]:
            rows["prompt_length"][entry["prompt_indexes"]] = entry["prompt_lengths"]
        logger.warning("%s: %d prompt(s) of %d failed in that run (batches %s); their rows are "
                       "zeros that valid_mask() leaves out (Activations.failed_prompts)",
                       directory, failed.size, count,
                       ", ".join(str(f["shard"]) for f in index["failed"]))
    for shard in shards:
        path = directory / shard["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in {INDEX_FILE} but missing")
        where = np.asarray(shard["prompt_indexes"], dtype=np.int64)
        if where.size and (where.min() < 0 or where.max() >= count):
            raise ValueError(f"{INDEX_FILE} in {directory}: shard {shard['file']} lists prompt "
                             f"indexes outside 0..{count - 1}")
        with safe_open(str(path), framework="numpy") as f:
            keys = set(f.keys())
            for name in [*wanted, *ROW_TENSORS]:
                if name not in keys:
                    raise ValueError(f"{path} has no tensor {name!r}")
            if not np.array_equal(f.get_tensor("prompt_index"), where):
                raise ValueError(f"{path}: its prompt_index differs from {INDEX_FILE}'s")
            for name in wanted:
                array = f.get_tensor(name)
                if list(array.shape) != shard["shapes"][name]:
                    raise ValueError(f"{path}: tensor {name!r} has shape {list(array.shape)}, "
                                     f"{INDEX_FILE} says {shard['shapes'][name]}")
                arrays[name][where, :array.shape[1]] = array
            for name, values in rows.items():
                values[where] = f.get_tensor(name)
        seen[where] = True
    if not seen.all():
        raise ValueError(f"{INDEX_FILE} in {directory} has no row for prompt "
                         f"{int(np.flatnonzero(~seen)[0])} of {count}")
    return Activations(arrays, index, rows, failed)
