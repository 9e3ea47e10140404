"""``infermode translate``: text from one language to another with :class:`~infermode.Translator`.

    infermode translate "Hello!" --adapter adapters/best_ep1       # one text
    infermode translate - --target German < letter.txt             # all of stdin as one text
    infermode translate --interactive                              # a prompt per line
    infermode translate --interactive < lines.txt > out.txt        # one translation per line

Translations alone go to stdout; the device chosen and any warning go to stderr (through
logging). In a terminal, Ctrl-D or Ctrl-C at the prompt ends the session with status 0; Ctrl-C
during a translation exits 130, as the other commands do.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Iterable, List

from infermode.cli import CliError, _at_least, _chat_lines, _load_model, _read_prompt
from infermode.devices import DeviceError
from infermode.translate import Translator, _check_prompt

DEVICES = ("auto", "cpu", "cuda", "xpu", "mps")
#: --max-new-tokens by default, unless the model's context is shorter.
TRANSLATE_TOKENS = 256

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Translates TEXT (or each line, with --interactive) from --source to --target with the model's
chat template. --device auto runs infermode's core on the CPU unless an accelerator is available;
on MPS, a model whose largest tensor (adapter included) is over 4 GiB stays on the CPU with a
warning, since MPS aborts the process on such a tensor. An explicit --device is obeyed."""


def add_translate_parser(sub: Any, parents: List[argparse.ArgumentParser],
                         adapter_option: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = sub.add_parser("translate", parents=parents, description=DESCRIPTION,
                            help="translate text, optionally with a LoRA adapter")
    parser.add_argument("text", nargs="?", metavar="TEXT",
                        help="the text; - reads it from stdin; none with --interactive")
    adapter_option(parser)
    parser.add_argument("--source", default="English", metavar="LANGUAGE",
                        help="the language of the text (default: English)")
    parser.add_argument("--target", default="French", metavar="LANGUAGE",
                        help="the language to translate into (default: French)")
    parser.add_argument("--interactive", action="store_true",
                        help="translate line by line: a prompt in a terminal, else one "
                             "translation per line of stdin; Ctrl-D ends")
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where the model runs (default: auto, the best available; cpu is "
                             "infermode's core, others run PyTorch)")
    parser.add_argument("--max-new-tokens", type=_at_least(int, 1), default=TRANSLATE_TOKENS,
                        metavar="N", help=f"at most N tokens per translation (default: "
                                          f"{TRANSLATE_TOKENS}, or what the context leaves)")
    parser.add_argument("--prompt", metavar="TEMPLATE",
                        help="the instruction, with {source}, {target} and {text}: the prompt "
                             "the adapter was trained on (default: 'Translate the following "
                             "{source} text to {target}:\\n{text}')")
    parser.add_argument("--system", metavar="TEXT", help="a system message first")
    parser.set_defaults(func=translate_command)


def translate_command(args: argparse.Namespace) -> int:
    if args.interactive == (args.text is not None):
        raise CliError("give TEXT (- reads stdin) or --interactive" if args.text is None
                       else "give TEXT or --interactive, not both")
    if args.prompt is not None:
        try:
            _check_prompt(args.prompt)
        except ValueError as exc:
            raise CliError(f"--prompt: {exc}") from None
    text = None if args.interactive else _read_prompt(args.text)

    def load(path: Any, **options: Any) -> Translator:
        try:
            return Translator(path, source=args.source, target=args.target, device=args.device,
                              prompt=args.prompt, system=args.system,
                              max_new_tokens=args.max_new_tokens, **options)
        except DeviceError as exc:
            raise CliError(f"--device {args.device}: {exc}") from exc

    translator = _load_model(args, load)
    logger.info("translating on %s: %s", translator.device_choice.device,
                translator.device_choice.reason)
    if text is not None:
        print(translator.translate(text), flush=True)
        return 0
    terminal = sys.stdin.isatty()
    if terminal:
        print(f"infermode translate, {args.source} to {args.target}, with "
              f"{args.model or 'the bundled model'}: Ctrl-D or Ctrl-C to leave", file=sys.stderr)
    for line in _chat_lines(True) if terminal else _input_lines():
        print(translator.translate(line), flush=True)
    return 0


def _input_lines() -> Iterable[str]:
    """Every line of piped input, blank ones too: the output keeps the input's lines."""
    for line in sys.stdin:
        yield line.rstrip("\r\n")
