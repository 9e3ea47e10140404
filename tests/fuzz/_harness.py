"""What the fuzz targets share: how one input becomes the files of a directory, a scratch directory
to write them in, the rule that decides whether an exception is an accepted answer, and the
atheris entry point.

A target whose loader reads several files takes them from one input, joined by ``SEPARATOR`` in a
fixed order (an empty part means the file is absent). A separator rather than length prefixes:
libFuzzer inserts and erases bytes anywhere, and a separator keeps the other files intact when it
does, where a length prefix would shift every file after the one that changed.

Run a target with ``scripts/fuzz`` (or directly: ``python tests/fuzz/fuzz_gguf.py CORPUS_DIR
-max_total_time=60``); given files instead of directories it runs each once, which is how a
crash is reproduced.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import traceback
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
#: A tiny Llama checkpoint (config, weights, word-level tokenizer, ChatML) that the adapter and
#: tokenizer targets load their fuzzed files onto; written by make_corpus.py.
TINY_LLAMA = HERE / "tiny-llama"

SEPARATOR = b"\n\x00--infermode-fuzz-file--\x00\n"
# Scratch directories are named <prefix><pid>-<random>, so that a later run can tell its own.
_PREFIX = "infermode-fuzz-"

# The files each multi-file target's input holds, in order.
#: A Hugging Face checkpoint directory: one weight file, or an index and two shards.
HF_FILES = ("config.json", "model.safetensors", "generation_config.json",
            "model.safetensors.index.json", "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors")
#: A PEFT adapter directory.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: The tokenizer files of a checkpoint directory (beside TINY_LLAMA's config and weights).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")

# Exceptions a loader may answer a bad file with. Subclasses that only say how some library
# failed inside the loader are not answers: a UnicodeDecodeError or JSONDecodeError (both are
# ValueErrors) names neither the file nor what in it is wrong.
LOADER_ERRORS: Tuple[type, ...] = (ValueError, FileNotFoundError, NotADirectoryError)
LEAKED: Tuple[type, ...] = (UnicodeError, json.JSONDecodeError)


class Finding(AssertionError):
    """An input that made the code under test misbehave without crashing the process."""


def unexpected(exc: BaseException, what: str) -> Finding:
    """A :class:`Finding` for ``exc``, with its traceback: atheris prints only the Finding's."""
    where = "".join(traceback.format_exception(exc)).rstrip()
    return Finding(f"{what}\n--- the exception, as raised ---\n{where}")


def split_files(data: bytes, names: Sequence[str]) -> Dict[str, bytes]:
    """The files of one input: part i is ``names[i]``; empty or missing parts are absent files,
    and anything after the last name's part belongs to it."""
    parts = data.split(SEPARATOR, len(names) - 1)
    return {name: part for name, part in zip(names, parts) if part}


def join_files(files: Dict[str, bytes], names: Sequence[str]) -> bytes:
    """The input that :func:`split_files` turns back into ``files`` (for seed corpora)."""
    unknown = set(files) - set(names)
    if unknown:
        raise ValueError(f"files {sorted(unknown)} are not among {list(names)}")
    return SEPARATOR.join(files.get(name, b"") for name in names)


class Scratch:
    """A directory rewritten for every input, on tmpfs when there is one (writes are the bulk of a
    cheap input's cost). Old files are unlinked, never truncated: an array still mapping the
    previous input's file keeps its own pages."""

    def __init__(self, name: str) -> None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        _remove_orphans(Path(base or tempfile.gettempdir()))
        self.root = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base))
        self.path = self.root / name
        self.path.mkdir()
        self._written: Dict[str, bytes] = {}

    def write(self, files: Dict[str, bytes], keep: Iterable[str] = ()) -> Path:
        """Makes the directory hold exactly ``files`` (and the names in ``keep``)."""
        keep = set(keep)
        for entry in self.path.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        for name, content in files.items():
            (self.path / name).write_bytes(content)
        self._written = dict(files)
        return self.path

    def check_untouched(self) -> None:
        """Readers never write: every fuzzed file must still hold what was written."""
        for name, content in self._written.items():
            path = self.path / name
            if not path.is_file() or path.read_bytes() != content:
                raise Finding(f"{path} was changed or removed by the code under test")


def _remove_orphans(base: Path) -> None:
    """Removes the scratch directories of target processes that have ended. A target cannot
    clean up after itself: libFuzzer ends the process with C's exit(), which skips Python's
    atexit handlers, and on tmpfs the leftovers would hold memory."""
    for directory in base.glob(f"{_PREFIX}*"):
        pid = directory.name[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(directory, ignore_errors=True)


def check_loader_error(exc: BaseException, where: Path) -> None:
    """Accepts ``exc`` as a loader's answer to a bad file, or raises :class:`Finding`.

    Accepted: a ValueError / FileNotFoundError / NotADirectoryError (not a leaked decode error)
    whose message names ``where`` (the file or directory read), so a user knows which file is
    at fault.
    """
    if not isinstance(exc, LOADER_ERRORS) or isinstance(exc, LEAKED):
        raise unexpected(exc, f"unexpected {type(exc).__name__} from a loader") from exc
    if str(where) not in str(exc):
        raise unexpected(exc, f"{type(exc).__name__} does not name {where}") from exc


def instrumented(*packages: str):
    """A context manager under which importing ``packages`` instruments them for atheris'
    coverage feedback: import the code under test inside it.

        with instrumented("infermode"):
            import infermode
    """
    import atheris

    return atheris.instrument_imports(include=list(packages))


def fuzz(test_one_input: Callable[[bytes], None]) -> None:
    """Hands ``test_one_input`` to libFuzzer with the command line's flags (corpus directories,
    ``-max_total_time=``, ``-runs=``...; files instead of directories: each is run once)."""
    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def load_or_refuse(load: Callable[[], Any], where: Path, scratch: Scratch) -> Any:
    """What ``load()`` returns, or None when it refused the files with an accepted error (see
    :func:`check_loader_error`); either way the files must be as they were written."""
    try:
        return load()
    except Exception as exc:  # noqa: BLE001 - check_loader_error judges it; the rest are findings
        check_loader_error(exc, where)
        return None
    finally:
        scratch.check_untouched()


def exercise_other_dtypes(data: bytes, path: Path, dtypes: Sequence[str]) -> None:
    """Loads the accepted checkpoint at ``path`` again in each of ``dtypes`` (other conversions of
    the same weights) and runs it. Reloading costs as much as the first load, so only every
    eighth input does, chosen by its bytes so that a rerun of an input repeats it."""
    import infermode

    if zlib.crc32(data) % 8:
        return
    for dtype in dtypes:
        exercise(infermode.CausalLM.from_pretrained(path, dtype=dtype, threads=1))


def check_named_refusal(exc: BaseException) -> None:
    """Accepts a documented refusal of a call on a loaded model (a ValueError that is not a leaked
    decode error), or raises :class:`Finding`."""
    if not isinstance(exc, ValueError) or isinstance(exc, LEAKED):
        raise unexpected(exc, f"unexpected {type(exc).__name__}") from exc


def exercise(model) -> None:
    """Runs a model that a loader accepted: logits, a generation, and, when it has them, its
    tokenizer and chat template.

    A loader that accepts a checkpoint promises that it runs, so an exception from the forward
    pass or from generating on token ids is a finding. Text is another matter: a tokenizer may
    give ids outside the model's vocabulary or none at all, and a chat template may refuse a
    conversation; those must be named ValueErrors.
    """
    import numpy as np

    config = model.config
    context, vocab = config.max_position_embeddings, config.vocab_size
    n = min(2, context)
    logits = model.forward([[0] * n])
    if logits.shape != (1, n, vocab) or logits.dtype != np.float32:
        raise Finding(f"forward gave {logits.dtype} {logits.shape}, expected float32 "
                      f"{(1, n, vocab)}")
    if context >= 2:
        out = model.generate([0], max_new_tokens=1, capture=["final_norm"])
        if len(out.token_ids) != 1 or len(out.token_ids[0]) != 1 \
                or not 0 <= out.token_ids[0][0] < vocab:
            raise Finding(f"generate gave token ids {out.token_ids} for a vocabulary of {vocab}")
        streamed = list(model.generate([0], max_new_tokens=1, stream=True))
        if [t.token_id for t in streamed] != out.token_ids[0]:
            raise Finding(f"streaming gave {streamed}, generate gave {out.token_ids}")
    if model.tokenizer is None:
        return
    try:
        ids = model.encode_prompts("hello world <|im_end|> w7 12")
    except Exception as exc:  # noqa: BLE001 - the rule is check_named_refusal's
        check_named_refusal(exc)
    else:
        if len(ids[0]) < context:
            model.generate(ids, max_new_tokens=1)
    try:
        model.apply_chat_template([{"role": "system", "content": "be brief"},
                                   {"role": "user", "content": "hi"}])
    except Exception as exc:  # noqa: BLE001
        check_named_refusal(exc)


def dispatch(calls: List[Callable[[Any], None]]) -> Callable[[bytes], None]:
    """The test_one_input of a target whose input is a list of choices: the first byte picks one
    of ``calls``, the rest are its arguments (atheris.FuzzedDataProvider)."""

    def test_one_input(data: bytes) -> None:
        if not data:
            return
        import atheris

        calls[data[0] % len(calls)](atheris.FuzzedDataProvider(data[1:]))

    return test_one_input
