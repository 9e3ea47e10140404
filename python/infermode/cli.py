"""The ``infermode`` command line: ``generate``, ``chat``, ``translate``, ``bench`` and ``info``.

    infermode generate "The capital of France is"                  # the bundled model
    infermode generate - --model models/Qwen2.5-0.5B --chat < question.txt
    infermode generate "Hello" --model m/ --capture 3,final_norm --out runs/probe
    printf 'hi\\nbye\\n' | infermode chat --model m/                 # one reply per line
    infermode translate "Hello!" --adapter adapters/best_ep1 --target French
    infermode bench --model m/ --json

Errors are one line on stderr (``infermode: error: ...``) with exit status 1; ``--debug`` shows
the traceback instead. Usage errors (an unknown flag) exit 2, as argparse does; Ctrl-C during a
generation exits 130.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

DEVICE_TYPES = ("cpu", "cuda", "xpu", "mps", "xla")
#: The exit status of a process ended by SIGINT, as shells report it.
EXIT_INTERRUPTED = 130
CHAT_PROMPT = ">>> "
#: --max-new-tokens by default, unless the model's context is shorter.
GENERATE_TOKENS = 256
CHAT_TOKENS = 512
BENCH_ATTEMPTS = 3

logger = logging.getLogger(__name__)


class CliError(Exception):
    """A mistake in the command's arguments or inputs, reported as one line without traceback."""


# ------------------------------------------------------------------------------------------ info


def _print_info(args: argparse.Namespace) -> int:
    from infermode.devices import _torch, select_mode
    from infermode.info import cpu_info

    info = cpu_info()
    rows = [
        ("version", info["version"]),
        ("build", info["build"]),
        ("cpu", f"{info['brand']} ({info['vendor']})"),
        ("features", " ".join(info["features"]) or "(baseline x86-64 only)"),
        ("isa paths", ", ".join(info["isa_supported"])),
        ("isa in use", info["isa"] + (f" (capped by INFERMODE_ISA={info['isa_cap']})"
                                      if info["isa_cap"] else "")),
        ("kernels", ", ".join(f"{k}={v}" for k, v in info["kernels"].items())),
        ("threads", f"{info['threads']} (physical cores: {info['physical_cores']})"),
    ]
    if info["amx_note"]:
        rows.append(("amx", info["amx_note"]))
    torch = _torch()
    rows.append(("torch", getattr(torch, "__version__", "not installed")))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print()
    print("inference mode per device:")
    choices = [("native (cpu)", select_mode("cpu", native=True))]
    choices += [(kind, select_mode(kind)) for kind in DEVICE_TYPES]
    width = max(len(k) for k, _ in choices)
    for kind, choice in choices:
        print(f"  {kind:<{width}}  {choice.name:<14}  {choice.reason}")
    return 0


# ------------------------------------------------------------------------------------ the model


def _load_model(args: argparse.Namespace, load: Optional[Callable[..., Any]] = None) -> Any:
    """The model of ``--model`` (the bundled one without it), with ``--dtype``, ``--threads``
    and ``--adapter``: ``load(path, **options)``, by default ``CausalLM.from_pretrained``.

    A load error that does not name the file gets its name, so every message says which file
    was wrong.
    """
    from infermode.llm import CausalLM

    path, adapter = args.model, getattr(args, "adapter", None)
    if path is not None and not os.path.exists(path):
        raise CliError(f"--model {path}: no such file or directory")
    if adapter is not None and not os.path.isdir(adapter):
        raise CliError(f"--adapter {adapter}: no such directory (expected a PEFT adapter "
                       "directory: adapter_config.json + adapter_model.safetensors)")
    # No --dtype: from_pretrained's own default for the kind of file.
    options = {"threads": args.threads, **({"dtype": args.dtype} if args.dtype else {}),
               **({"adapter": adapter} if adapter else {})}
    started = time.perf_counter()
    try:
        model = (load or CausalLM.from_pretrained)(path, **options)
    except CliError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt file may fail in any library below
        if adapter is not None and str(adapter) in str(exc):
            raise
        if path is None:
            raise CliError(f"cannot load the bundled model ({_one_line(exc)}); pass --model "
                           "PATH") from exc
        if str(path) in str(exc):
            raise
        raise CliError(f"cannot load {path}: {_one_line(exc)}") from exc
    dtype = getattr(model, "dtype", None)
    logger.info("loaded %s%s%s in %.2f s", path or "the bundled model",
                f" with the adapter {adapter}" if adapter else "", f" ({dtype})" if dtype else "",
                time.perf_counter() - started)
    return model


def _sampling(args: argparse.Namespace) -> Dict[str, Any]:
    """The generate() keywords the sampling flags set; a seed is drawn here when sampling without
    one, so that it can be written down (the activations index records it)."""
    seed = args.seed
    if seed is None and args.temperature > 0:
        seed = int.from_bytes(os.urandom(8), "little")
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                top_k=args.top_k, top_p=args.top_p, seed=seed)


class _TextStream:
    """Turns token ids into text pieces as they are generated.

    Byte-level tokenizers split one character (an emoji, an accented letter) across tokens, and
    the text of a partial sequence then ends in U+FFFD until the next token completes it. Only
    text that no later token can change is handed out, so the streamed pieces add up to the
    decode of the whole sequence. ``strip``: leave out the white space the text starts and ends
    with (chat templates leave a newline before an answer).
    """

    def __init__(self, tokenizer: Any, strip: bool = False) -> None:
        self.tokenizer = tokenizer
        self.strip = strip
        self.token_ids: List[int] = []
        self.text = ""  # decoded so far, white space included
        self._held = ""  # white space not handed out yet
        self._started = False  # has any text been handed out

    def push(self, token_id: int) -> str:
        self.token_ids.append(token_id)
        return self._advance(self._decode().rstrip("\ufffd"))

    def finish(self) -> str:
        return self._advance(self._decode())

    def _decode(self) -> str:
        return self.tokenizer.decode(self.token_ids, skip_special_tokens=True)

    def _advance(self, text: str) -> str:
        piece = text[len(self.text):] if text.startswith(self.text) else ""
        self.text += piece
        if not self.strip:
            return piece
        # White space waits until text follows it, so neither end of the reply is shown.
        piece = self._held + piece
        if not self._started:
            piece = piece.lstrip()
        body = piece.rstrip()
        self._held = piece[len(body):]
        self._started = self._started or bool(body)
        return body


def _run(model: Any, prompt_ids: List[int], sampling: Dict[str, Any], stream: bool,
         strip: bool = False, stop: Optional[List[int]] = None) -> str:
    """Generates for one prompt and prints the text (``stream``: piece by piece as the tokens
    come; ``strip``: without white space at its ends); returns it."""
    if not stream:
        return _show(model.generate([prompt_ids], stop=stop, **sampling).texts[0], strip)
    pieces = _TextStream(model.tokenizer, strip)
    for token in model.generate([prompt_ids], stop=stop, stream=True, **sampling):
        sys.stdout.write(pieces.push(token.token_id))
        sys.stdout.flush()
    sys.stdout.write(pieces.finish() + "\n")
    sys.stdout.flush()
    return pieces.text.strip() if strip else pieces.text


def _show(text: str, strip: bool) -> str:
    text = text.strip() if strip else text
    print(text, flush=True)
    return text


def _stream_default(args: argparse.Namespace) -> bool:
    return sys.stdout.isatty() if args.stream is None else args.stream


# ------------------------------------------------------------------------------------- chatting


class _Conversation:
    """The messages of a chat and the prompt the model's chat template makes of them.

    The rendered text is tokenized without the tokenizer's own special tokens, as transformers'
    ``apply_chat_template`` does: the template already writes the ones the model expects. When
    the conversation outgrows the model's context, the oldest exchanges are dropped first (a
    system message stays).
    """

    def __init__(self, model: Any, model_path: Optional[str], system: Optional[str]) -> None:
        if model.chat_template is None:
            raise CliError(f"{model_path or 'the bundled model'} has no chat template: chat needs "
                           "an instruct (chat) model; use `infermode generate` for plain text")
        if model.tokenizer is None:
            raise CliError(f"{model_path} has no tokenizer: chat needs one")
        self.model = model
        self.messages: List[Dict[str, str]] = []
        if system:
            self.messages.append({"role": "system", "content": system})
        self.stop = model.chat_stop_ids

    def ask(self, text: str, max_new_tokens: int) -> List[int]:
        """Adds the user's message and returns the token ids of the whole conversation."""
        self.messages.append({"role": "user", "content": text})
        context = self.model.config.max_position_embeddings
        while True:
            ids = self._encode()
            if len(ids) + max_new_tokens <= context or not self._drop_oldest_exchange():
                break
        if len(ids) + max_new_tokens > context:
            self.messages.pop()
            raise CliError(f"the message takes {len(ids)} tokens with the chat template; with "
                           f"--max-new-tokens {max_new_tokens} that exceeds the model's context "
                           f"of {context}")
        return ids

    def answered(self, reply: str) -> None:
        self.messages.append({"role": "assistant", "content": reply})

    def retract(self) -> None:
        """Forgets the last message, whose reply was interrupted."""
        self.messages.pop()

    def _encode(self) -> List[int]:
        return self.model.apply_chat_template(self.messages)

    def _drop_oldest_exchange(self) -> bool:
        first = 1 if self.messages[0]["role"] == "system" else 0
        if len(self.messages) - first <= 1:
            return False
        del self.messages[first:first + 2]
        return True


def _chat_lines(interactive: bool) -> Iterable[str]:
    """The user's messages: prompted for in a terminal, else one per line of stdin (blank lines
    skipped). Ends on end of input, and in a terminal on Ctrl-C at the prompt."""
    if not interactive:
        for line in sys.stdin:
            if line.strip():
                yield line.rstrip("\r\n")
        return
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:  # pragma: no cover - not on every platform
        pass
    while True:
        try:
            line = input(CHAT_PROMPT)
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if line.strip():
            yield line


def _chat(args: argparse.Namespace) -> int:
    model = _load_model(args)
    conversation = _Conversation(model, args.model, args.system)
    if args.max_new_tokens is None:  # half the context leaves room for the conversation
        args.max_new_tokens = min(CHAT_TOKENS, model.config.max_position_embeddings // 2)
    interactive = sys.stdin.isatty()
    stream = _stream_default(args)
    if interactive:
        print(f"infermode chat with {args.model or 'the bundled model'}: Ctrl-D or Ctrl-C to "
              "leave, Ctrl-C during a reply to stop it", file=sys.stderr)
    for line in _chat_lines(interactive):
        try:
            ids = conversation.ask(line, args.max_new_tokens)
        except CliError as exc:
            if not interactive:
                raise
            print(f"infermode: {exc}", file=sys.stderr)  # the next message may fit
            continue
        try:
            reply = _run(model, ids, _sampling(args), stream, strip=True,
                         stop=conversation.stop)
        except KeyboardInterrupt:
            if not interactive:
                raise
            print("\n[reply stopped]", file=sys.stderr)
            conversation.retract()
            continue
        conversation.answered(reply)
    return 0


# ------------------------------------------------------------------------------------- generate


def _read_prompt(prompt: str) -> str:
    if prompt == "-":
        prompt = sys.stdin.read()
        if prompt.endswith("\n"):
            prompt = prompt[:-1]
    if not prompt.strip():
        raise CliError("the prompt is empty")
    return prompt


def _capture_names(text: Optional[str]) -> List[str]:
    """``--capture 3,final_norm`` -> ``["blocks.3.resid_post", "final_norm"]``, checked."""
    from infermode.llm import capture_name

    if text is None:
        return []
    names = []
    for item in (part.strip() for part in text.split(",")):
        try:
            names.append(capture_name(int(item) if item.lstrip("-").isdigit() else item))
        except (TypeError, ValueError) as exc:
            raise CliError(f"--capture: {exc}") from None
    return names


def _check_out(args: argparse.Namespace) -> None:
    """Refuses, before the model loads, a capture without a place to write it (or the reverse)
    and an --out that already holds a run."""
    from infermode.activations import previous_run_files

    if bool(args.capture) != bool(args.out):
        raise CliError("--capture and --out go together: --capture LAYERS --out DIR")
    if args.out is None:
        return
    if args.stream:
        raise CliError("--stream cannot be combined with --capture: activations come at the end")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file, not a directory")
    previous = previous_run_files(out)
    if previous and not args.overwrite:
        raise CliError(f"--out {out} already holds activations ({len(previous)} file(s), e.g. "
                       f"{previous[0].name}): pass --overwrite to replace them")


def _write_activations(args: argparse.Namespace, model: Any, names: List[str], prompt: str,
                       prompt_ids: List[int], out: Any, sampling: Dict[str, Any]) -> Path:
    """Writes one shard and the index with the pipeline's writer, so ``load_activations`` and
    every other reader of the pipeline's runs reads this one."""
    from infermode import __version__
    from infermode.activations import ActivationWriter

    writer = ActivationWriter(Path(args.out), names, args.capture_positions,
                              args.max_new_tokens)
    writer.start(overwrite=args.overwrite)
    writer.add_batch([0], [len(prompt_ids)], out.token_ids, out.activations)
    config = model.config
    return writer.finish({
        "model_path": args.model,
        "model": {"model_type": config.model_type, "hidden_size": config.hidden_size,
                  "num_hidden_layers": config.num_hidden_layers,
                  "vocab_size": config.vocab_size},
        "model_dtype": model.dtype,
        "hidden_size": config.hidden_size,
        "command": {"prompt": prompt, "chat": args.chat, "system": args.system,
                    **{k: v for k, v in sampling.items() if k != "seed"}},
        "seed": sampling["seed"],
        "infermode_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })


def _prompt_ids(args: argparse.Namespace, model: Any,
                prompt: str) -> Tuple[List[int], Optional[List[int]]]:
    """The prompt's token ids (as one user message with --chat) and the stop ids (None: the
    model's own). Sets --max-new-tokens, when not given, to what the context leaves."""
    stop = None
    if args.chat:
        conversation = _Conversation(model, args.model, args.system)
        prompt_ids = conversation.ask(prompt, args.max_new_tokens or 1)
        stop = conversation.stop
    else:
        prompt_ids = model.encode_prompts(prompt)[0]
    if args.max_new_tokens is None:  # an overlong prompt is left for generate() to refuse
        room = model.config.max_position_embeddings - len(prompt_ids)
        args.max_new_tokens = max(1, min(GENERATE_TOKENS, room))
    return prompt_ids, stop


def _generate(args: argparse.Namespace) -> int:
    names = _capture_names(args.capture)
    _check_out(args)
    if args.system and not args.chat:
        raise CliError("--system needs --chat")
    prompt = _read_prompt(args.prompt)
    model = _load_model(args)
    try:
        model.capture_points(names)
    except ValueError as exc:
        raise CliError(f"--capture: {exc}") from None
    prompt_ids, stop = _prompt_ids(args, model, prompt)
    sampling = _sampling(args)
    if not names:
        _run(model, prompt_ids, sampling, _stream_default(args), strip=args.chat, stop=stop)
        return 0
    out = model.generate([prompt_ids], stop=stop, capture=names,
                         capture_positions=args.capture_positions, **sampling)
    _show(out.texts[0], strip=args.chat)
    index = _write_activations(args, model, names, prompt, prompt_ids, out, sampling)
    logger.info("wrote the activations of %s to %s", ", ".join(names), index.parent)
    return 0


# ---------------------------------------------------------------------------------------- bench

BENCH_METHOD = """\
How it times: each repeat runs two generations of the same prompt of --prompt-tokens random
tokens, greedy, with no stop token: one that makes 1 token (the prefill, plus choosing one
token) and one that makes --new-tokens + 1. Prefill tok/s is prompt tokens / the first's time;
decode tok/s is --new-tokens / the difference of the two times, so no prefill time is in it.
A warm-up generation runs first. The table gives the median and the min-max over --repeats;
a wide range means another process disturbed the run."""


def _bench(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from infermode.info import cpu_info

    model = _load_model(args)
    context = model.config.max_position_embeddings
    if args.prompt_tokens + args.new_tokens + 1 > context:
        raise CliError(f"--prompt-tokens {args.prompt_tokens} + --new-tokens {args.new_tokens} "
                       f"exceed the model's context of {context} positions")
    prompt = np.random.default_rng(0).integers(0, model.config.vocab_size,
                                               args.prompt_tokens).tolist()

    def seconds(new_tokens: int) -> float:
        started = time.perf_counter()
        model.generate([prompt], max_new_tokens=new_tokens, stop=[])
        return time.perf_counter() - started

    def measure() -> Tuple[float, float]:
        """Prefill and decode tok/s of one repeat. A pause of the machine during the short run
        can make it outlast the long one; such a repeat is run again, a few times at most."""
        for _ in range(BENCH_ATTEMPTS):
            first = seconds(1)
            total = seconds(args.new_tokens + 1)
            if total > first:
                return args.prompt_tokens / first, args.new_tokens / (total - first)
        raise CliError(f"{args.new_tokens} decode steps took no measurable time next to the "
                       "prefill: raise --new-tokens")

    seconds(2)  # warm: the arena, the thread pool, the weights' pages
    runs = [measure() for _ in tqdm(range(args.repeats), desc="bench", unit="run",
                                    dynamic_ncols=True)]
    prefill, decode = [p for p, _ in runs], [d for _, d in runs]
    info = cpu_info()
    result = {
        "model": args.model or "bundled", "dtype": model.dtype,
        "threads": args.threads or info["threads"], "isa": info["isa"],
        "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "prefill_tok_s": _summary(prefill), "decode_tok_s": _summary(decode),
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        _print_bench(result)
    return 0


def _summary(values: List[float]) -> Dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


def _print_bench(result: Dict[str, Any]) -> None:
    print(f"{result['model']}: {result['dtype']}, {result['threads']} threads, "
          f"isa {result['isa']}, {result['repeats']} repeats")
    print(f"{'':8}{'tokens':>8}{'tok/s median':>14}{'min-max':>22}")
    for stage, tokens in (("prefill", result["prompt_tokens"]),
                          ("decode", result["new_tokens"])):
        s = result[f"{stage}_tok_s"]
        spread = f"{s['min']:.1f}-{s['max']:.1f}"
        print(f"{stage:<8}{tokens:>8}{s['median']:>14.1f}{spread:>22}")


# ----------------------------------------------------------------------------------- the parser


def _at_least(kind: type, minimum: float) -> Any:
    """An argparse ``type=`` that parses ``kind`` and refuses values below ``minimum``."""
    def parse(text: str) -> Any:
        value = kind(text)
        if not value >= minimum:  # NaN too
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names it in "invalid int value: 'x'"
    return parse


def _model_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--model", metavar="PATH",
                        help="a Hugging Face checkpoint directory or a .gguf file (default: the "
                             "bundled SmolLM2-135M-Instruct)")
    parent.add_argument("--dtype", metavar="DTYPE",
                        help="weight matrices as float32, bfloat16, q8_0, q4_0, or auto: as the "
                             "file stores them (default: float32 for a Hugging Face directory, "
                             "auto for a .gguf file)")
    parent.add_argument("--threads", type=_at_least(int, 1), metavar="N",
                        help="threads (default: the physical cores, or INFERMODE_NUM_THREADS)")
    return parent


def _adapter_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", metavar="DIR",
                        help="a LoRA adapter directory (PEFT's save_pretrained), merged into "
                             "the model's weights at load")


def _sampling_options(max_new_tokens: int) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--max-new-tokens", type=_at_least(int, 1), metavar="N",
                        help=f"at most N new tokens (default: {max_new_tokens}, or less where "
                             "the model's context is shorter)")
    parent.add_argument("--temperature", type=_at_least(float, 0), default=0.0, metavar="T",
                        help="0 is greedy (the default); higher samples more freely")
    parent.add_argument("--top-k", type=_at_least(int, 0), default=0, metavar="K",
                        help="sample among the K likeliest tokens (default: 0, all)")
    parent.add_argument("--top-p", type=float, default=1.0, metavar="P",
                        help="sample among the likeliest tokens whose probabilities add up to P "
                             "(default: 1)")
    parent.add_argument("--seed", type=_at_least(int, 0), metavar="N",
                        help="random seed for sampling (default: a fresh one)")
    parent.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                        help="print tokens as they come (default: when stdout is a terminal)")
    return parent


def _common_options(default: Any) -> argparse.ArgumentParser:
    """-v and --debug, accepted before and after the command. The command's copies default to
    SUPPRESS, so they do not reset a flag given before the command."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log at INFO")
    parent.add_argument("--debug", action="store_true", default=default,
                        help="show the traceback of an error")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infermode", description="Fast transformer inference on the CPU.",
        parents=[_common_options(False)])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options(argparse.SUPPRESS)
    model = _model_options()

    info = sub.add_parser("info", parents=[common],
                          help="version, build, CPU features, kernels in use, modes per device")
    info.set_defaults(func=_print_info)

    gen = sub.add_parser("generate", parents=[common, model, _sampling_options(GENERATE_TOKENS)],
                         help="continue a prompt (or answer it, with --chat)",
                         description="Generates text for PROMPT and prints it.")
    gen.add_argument("prompt", metavar="PROMPT", help="the prompt; - reads it from stdin")
    gen.add_argument("--chat", action="store_true",
                     help="send PROMPT as a user message through the model's chat template")
    gen.add_argument("--system", metavar="TEXT", help="with --chat: a system message first")
    gen.add_argument("--capture", metavar="LAYERS",
                     help="activations to record, comma-separated: block numbers or names "
                          "(embed, blocks.3.resid_post, final_norm); needs --out")
    gen.add_argument("--capture-positions", default="generated",
                     choices=("generated", "all", "prompt_mean"),
                     help="generated: one step per new token (default); all: prompt too; "
                          "prompt_mean: the prompt's mean")
    gen.add_argument("--out", metavar="DIR",
                     help="directory for the activations (safetensors shard + index.json, as "
                          "the pipeline writes; read with infermode.activations.load_activations)")
    gen.add_argument("--overwrite", action="store_true",
                     help="replace activations already in --out")
    _adapter_option(gen)
    gen.set_defaults(func=_generate)

    chat = sub.add_parser("chat", parents=[common, model, _sampling_options(CHAT_TOKENS)],
                          help="talk with the model (terminal, or one reply per line of stdin)",
                          description="A multi-turn chat through the model's chat template. In "
                                      "a terminal: a prompt and streamed replies. With stdin "
                                      "piped: one reply per non-blank input line, nothing else "
                                      "on stdout.")
    chat.add_argument("--system", metavar="TEXT", help="a system message to start with")
    _adapter_option(chat)
    chat.set_defaults(func=_chat)

    from infermode._cli_translate import add_translate_parser

    add_translate_parser(sub, [common, model], _adapter_option)

    bench = sub.add_parser("bench", parents=[common, model],
                           help="prefill and decode tokens/s of a model",
                           description="Measures prefill and decode speed.",
                           epilog=BENCH_METHOD,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--prompt-tokens", type=_at_least(int, 1), default=128, metavar="N",
                       help="prompt length (default: 128)")
    bench.add_argument("--new-tokens", type=_at_least(int, 1), default=128, metavar="N",
                       help="decode steps timed (default: 128)")
    bench.add_argument("--repeats", type=_at_least(int, 1), default=5, metavar="N",
                       help="measurements (default: 5)")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.set_defaults(func=_bench)
    return parser


# ------------------------------------------------------------------------------------- running


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = f"key {exc.args[0]!r} not found"
    return text or type(exc).__name__


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`infermode generate ... | head`): not an error of ours. Point
        # stdout at /dev/null so Python's exit-time flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("\ninfermode: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - every error ends as one line, or a traceback
        if args.debug:
            traceback.print_exc()
        else:
            print(f"infermode: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
