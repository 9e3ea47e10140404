"""A ``tokenizers.Tokenizer`` built from a GGUF file's ``tokenizer.ggml.*`` metadata.

GGUF keeps a byte-level BPE tokenizer (``tokenizer.ggml.model == "gpt2"``) as its pieces: the
vocabulary (``tokens``), the merge rules (``merges``), each token's kind (``token_type``), the
special ids, and the *name* of the pre-tokenizer (``tokenizer.ggml.pre``), whose regular
expressions live in llama.cpp's ``src/llama-vocab.cpp``. This module puts them back together so
that a file tokenizes here as it does in llama.cpp.

llama.cpp applies a pre-tokenizer's expressions one after the other, each splitting the pieces the
previous one made and keeping the text between matches as pieces too; ``Split(...,
behavior="isolated")`` in a ``Sequence`` does exactly that. The expressions below are the ones the
original ``tokenizer.json`` files use (llama.cpp rewrites ``(?i:...)``, which C++'s std::regex
lacks; the Rust tokenizers library has it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Sequence, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import tokenizers

__all__ = ["PRE_TOKENIZERS", "build_tokenizer", "end_of_generation_ids"]

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
_UNKNOWN, _CONTROL, _USER_DEFINED = 2, 3, 4

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

#: ``tokenizer.ggml.pre`` name -> the regular expressions llama.cpp splits text with, in order.
PRE_TOKENIZERS: Dict[str, Tuple[str, ...]] = {
    # llama.cpp's fallback for a file without a name (it warns that quality suffers).
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),
    "gpt-2": (_GPT2,),
    "phi-2": (_GPT2,),
    # Digits one by one, then GPT-2's rule.
    "smollm": (r"\p{N}", _GPT2),
    "starcoder": (r"\p{N}", _GPT2),
    "refact": (r"\p{N}", _GPT2),
    "llama3": (_LLAMA3,),
    "llama-v3": (_LLAMA3,),
    "llama-bpe": (_LLAMA3,),
    "qwen2": (_QWEN2,),
    "deepseek-r1-qwen": (_QWEN2,),
}
# Llama 3's vocabulary takes a whole pre-token that is in the vocabulary as one token, before
# any merge (llama.cpp's ignore_merges, tokenizers' BPE(ignore_merges=True)); it also adds BOS
# unless the file says otherwise.
_LLAMA3_FAMILY = ("llama3", "llama-v3", "llama-bpe")

# Control tokens llama.cpp also stops at, whatever the file's eos id (a subset of its list: the
# end-of-turn markers of the Llama, Qwen2 and SmolLM families).
_END_OF_GENERATION = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                      "<|eom_id|>", "<|end_of_text|>", "<EOT>")

Metadata = Callable[..., Any]  # (key, kind, default) -> value, as GGUFFile.metadata


def build_tokenizer(metadata: Metadata, source: str) -> "tokenizers.Tokenizer":
    """The byte-level BPE tokenizer that ``metadata`` describes; ``source`` names the file in
    errors. A SentencePiece (``llama``) or other vocabulary raises ValueError saying to put the
    model's ``tokenizer.json`` beside the file.

        >>> tokenizer = build_tokenizer(gguf_file.metadata, "model.gguf")
    """
    kind = metadata("tokenizer.ggml.model", str, None)
    beside = "put the model's tokenizer.json beside the .gguf file (it is then used instead)"
    if kind is None:
        raise ValueError(f"{source} has no tokenizer (no tokenizer.ggml.model); {beside}")
    if kind != "gpt2":
        what = "SentencePiece (llama)" if kind == "llama" else repr(kind)
        raise ValueError(f"{source}: building a {what} tokenizer from GGUF metadata is not "
                         f"supported (only byte-level BPE, 'gpt2'); {beside}")
    pre = metadata("tokenizer.ggml.pre", str, "default")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"{source}: pre-tokenizer {pre!r} is not supported; supported: "
                         f"{', '.join(PRE_TOKENIZERS)}; or {beside}")
    tokens: List[str] = metadata("tokenizer.ggml.tokens", list)
    types: List[int] = metadata("tokenizer.ggml.token_type", list, [])
    merges = _merges(metadata("tokenizer.ggml.merges", list, []), source)
    try:
        tokenizer = _bpe(tokens, merges, pre)
        _add_special_tokens(tokenizer, tokens, types)
    except Exception as exc:  # noqa: BLE001 - the Rust side raises bare Exceptions
        # e.g. "Token `he` out of vocabulary": a merge of tokens the vocabulary lacks.
        raise ValueError(f"{source}: the tokenizer its metadata describes cannot be built: "
                         f"{exc}") from None
    _add_post_processor(tokenizer, tokens, metadata, default_bos=pre in _LLAMA3_FAMILY,
                        source=source)
    return tokenizer


def end_of_generation_ids(tokens: Sequence[str], types: Sequence[int]) -> List[int]:
    """Ids of control tokens that end a turn ("<|im_end|>", "<|eot_id|>", ...), which llama.cpp
    stops at besides the file's eos id."""
    return [i for i, (token, kind) in enumerate(zip(tokens, types))
            if kind == _CONTROL and token in _END_OF_GENERATION]


def _merges(merges: Sequence[str], source: str) -> List[Tuple[str, str]]:
    pairs = []
    for i, merge in enumerate(merges):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{source}: merge {i} ({merge!r}) is not two tokens separated by "
                             "one space")
        pairs.append((parts[0], parts[1]))
    return pairs


def _bpe(tokens: Sequence[str], merges: List[Tuple[str, str]], pre: str) -> "tokenizers.Tokenizer":
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(tokens)}
    model = models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in _LLAMA3_FAMILY)
    tokenizer = Tokenizer(model)
    splits = [pre_tokenizers.Split(Regex(expr), behavior="isolated")
              for expr in PRE_TOKENIZERS[pre]]
    # The regexes already split; ByteLevel only maps bytes to its printable alphabet.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        splits + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _add_special_tokens(tokenizer: "tokenizers.Tokenizer", tokens: Sequence[str],
                        types: Sequence[int]) -> None:
    """Control and unknown tokens become special added tokens (matched in text before anything
    else, dropped by ``decode(skip_special_tokens=True)``); user-defined ones plain added tokens,
    also matched first — as llama.cpp does when it tokenizes with ``special=True``."""
    from tokenizers import AddedToken

    special, user = [], []
    for token, kind in zip(tokens, types):
        if kind in (_CONTROL, _UNKNOWN):
            special.append(AddedToken(token, special=True, normalized=False))
        elif kind == _USER_DEFINED:
            user.append(AddedToken(token, special=False, normalized=False))
    if special:
        tokenizer.add_special_tokens(special)
    if user:
        tokenizer.add_tokens(user)


def _add_post_processor(tokenizer: "tokenizers.Tokenizer", tokens: Sequence[str],
                        metadata: Metadata, default_bos: bool, source: str) -> None:
    """BOS/EOS around every encoding when ``tokenizer.ggml.add_bos_token`` /
    ``add_eos_token`` say so (absent: llama.cpp's default for the pre-tokenizer)."""
    from tokenizers import processors

    added: Dict[str, Any] = {}
    for which, default in (("bos", default_bos), ("eos", False)):
        if not metadata(f"tokenizer.ggml.add_{which}_token", bool, default):
            continue
        index = metadata(f"tokenizer.ggml.{which}_token_id", int, None)
        if index is None or not 0 <= index < len(tokens):
            raise ValueError(f"{source}: tokenizer.ggml.add_{which}_token is set but "
                             f"{which}_token_id is {index!r}, not a token of the vocabulary")
        added[which] = (tokens[index], index)
    if not added:
        return
    head = [f"{added['bos'][0]}:0"] if "bos" in added else []
    tail = [f"{added['eos'][0]}:0"] if "eos" in added else []
    tokenizer.post_processor = processors.TemplateProcessing(
        single=" ".join(head + ["$A:0"] + tail),
        pair=" ".join(head + ["$A:0"] + tail + head + ["$B:1"] + tail),
        special_tokens=list(added.values()))
