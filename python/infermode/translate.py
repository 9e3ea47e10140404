"""Translation with a decoder LLM, optionally fine-tuned with a LoRA adapter: :class:`Translator`.

    tr = im.Translator(adapter="adapters/best_ep1")          # the bundled model + an adapter
    tr.translate("Hello!")                                   # 'Bonjour !'
    tr.translate_batch(["Good morning.", "Thank you."])      # one batched generation

The prompt is a user message rendered with the model's chat template (adapters are trained on a
specific prompt: pass yours as ``prompt=``); a model without a chat template gets plain text.
Where the model runs follows :func:`infermode.devices.choose_device`: infermode's core on the
CPU, PyTorch (transformers + PEFT) on CUDA, XPU or MPS.
"""
from __future__ import annotations

import logging
import os
import string
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

from infermode.checkpoints import gguf
from infermode.devices import ModeChoice, choose_device, largest_tensor_bytes, select_mode
from infermode.llm import QUANTIZED_FORMATS, CausalLM

logger = logging.getLogger(__name__)

#: The user message of a chat model; ``{source}``, ``{target}`` and ``{text}`` are filled in.
DEFAULT_PROMPT = "Translate the following {source} text to {target}:\n{text}"
#: The whole prompt of a model without a chat template; its answer ends at the first line break.
DEFAULT_PLAIN_PROMPT = "{source}: {text}\n{target}:"
PROMPT_FIELDS = ("source", "target", "text")

ModelLike = Union[str, "os.PathLike[str]", CausalLM, Any, None]


class Translator:
    """Translates text from ``source`` to ``target`` with a decoder LLM.

    ``model``: None (the bundled SmolLM2-135M-Instruct), the path of a Hugging Face checkpoint
    directory or a ``.gguf`` file, or a loaded :class:`~infermode.CausalLM` (which runs where it
    is). ``adapter``: a PEFT LoRA adapter directory, merged into the weights at load.
    ``device``: "auto", "cpu", "cuda", "xpu" or "mps" (see :func:`~infermode.devices.
    choose_device`; the choice and its reason are in :attr:`device_choice`). ``prompt``: the user
    message (the whole prompt for a model without a chat template), with the fields ``{source}``,
    ``{target}`` and ``{text}``; ``system``: a system message first. ``threads`` and ``dtype``
    are :meth:`CausalLM.from_pretrained`'s.

        tr = im.Translator("models/Qwen2.5-0.5B-Instruct", source="English", target="German")
        tr.translate("Good morning!")
    """

    def __init__(self, model: ModelLike = None, adapter: Optional[str] = None,
                 source: str = "English", target: str = "French", *, device: str = "auto",
                 prompt: Optional[str] = None, system: Optional[str] = None,
                 max_new_tokens: int = 256, threads: Optional[int] = None,
                 dtype: Optional[str] = None) -> None:
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) \
                or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        self.source, self.target = source, target
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.model, self.device_choice = _load(model, adapter, device, threads, dtype)
        chat = self.model.chat_template is not None
        self.prompt = _check_prompt(prompt or (DEFAULT_PROMPT if chat else DEFAULT_PLAIN_PROMPT))
        if self.model.tokenizer is None:
            raise ValueError("the model has no tokenizer (tokenizer.json): a translator needs "
                             "one to read and write text")

    def __repr__(self) -> str:
        return (f"Translator({self.source} -> {self.target}, device "
                f"{self.device_choice.device}, adapter {self.active_adapter!r})")

    @property
    def active_adapter(self) -> Optional[str]:
        """The adapter in use (None: the base model, or adapters merged at load)."""
        return getattr(self.model, "active_adapter", None)

    # ------------------------------------------------------------------ translating

    def translate(self, text: str) -> str:
        """The translation of ``text`` (greedy); empty or blank text gives "".

            tr.translate("Hello!")
        """
        return self.translate_batch([text])[0]

    def translate_batch(self, texts: Sequence[str]) -> List[str]:
        """The translations of ``texts``, in one batched generation (the prompts may differ in
        length): the same as :meth:`translate` one by one. Blank texts give "".

            tr.translate_batch(["Good morning.", "Where is the station?"])
        """
        if isinstance(texts, str):
            raise TypeError("translate_batch takes a list of texts; use translate(text) for one")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        todo = [i for i, text in enumerate(texts) if text.strip()]
        out = [""] * len(texts)
        if not todo:
            return out
        prompts = [self.encode(texts[i]) for i in todo]
        lengths = [len(p) for p in prompts]
        longest = max(range(len(prompts)), key=lengths.__getitem__)
        context = self.model.config.max_position_embeddings
        room = context - lengths[longest]
        if room < 1:
            raise ValueError(f"the text {_preview(texts[todo[longest]])} takes "
                             f"{lengths[longest]} tokens with the prompt, the model's whole "
                             f"context of {context}: split it")
        generated = self.model.generate(prompts, max_new_tokens=min(self.max_new_tokens, room),
                                        stop=self.model.chat_stop_ids)
        for i, answer in zip(todo, generated.texts):
            out[i] = self._clean(answer)
        return out

    def encode(self, text: str) -> List[int]:
        """The token ids of the prompt for ``text``: what :meth:`translate` generates from."""
        content = self.prompt.format(source=self.source, target=self.target, text=text.strip())
        if self.model.chat_template is None:
            return self.model.encode_prompts(content)[0]
        messages = [{"role": "user", "content": content}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        return self.model.apply_chat_template(messages)

    def _clean(self, answer: str) -> str:
        if self.model.chat_template is None:  # a plain model goes on to the next example
            answer = answer.strip().split("\n", 1)[0]
        return answer.strip()

    # ------------------------------------------------------------------ adapters

    def load_adapter(self, path: Union[str, "os.PathLike[str]"],
                     name: Optional[str] = None) -> "Translator":
        """Loads a PEFT adapter directory into the model under ``name`` (default: the
        directory's name) and makes it the active one; returns the translator.

            im.Translator().load_adapter("./adapters/best_ep1").translate("Hello!")
        """
        if not Path(path).is_dir():
            raise FileNotFoundError(f"adapter directory {path} does not exist")
        name = name or Path(path).name
        self.model.load_adapter(path, name)
        self.model.set_adapter(name)
        return self

    def set_adapter(self, name: Optional[str]) -> None:
        """Switches to a loaded adapter; None translates with the base model alone."""
        self.model.set_adapter(name)


def _load(model: ModelLike, adapter: Optional[str], device: str, threads: Optional[int],
          dtype: Optional[str]) -> Tuple[Any, ModeChoice]:
    """The model and the device choice. A path is loaded where :func:`choose_device` says; a
    loaded model stays where it is."""
    if adapter is not None and not Path(adapter).is_dir():
        raise FileNotFoundError(f"adapter directory {adapter} does not exist")
    if not isinstance(model, (str, os.PathLike, type(None))):
        if adapter is not None:
            raise ValueError("adapter= loads with the model: with a loaded model, call "
                             "Translator.load_adapter(path) instead")
        where = getattr(model, "device", "cpu")
        if device not in ("auto", where):
            raise ValueError(f"the model is loaded already (on {where}): device {device!r} "
                             "applies only when the translator loads it from a path")
        choice = (select_mode("cpu", native=True) if isinstance(model, CausalLM)
                  else select_mode(where))
        return model, choice
    cpu_only = None
    if model is None or gguf.is_gguf(model):
        cpu_only = f"{model or 'the bundled model'} is a GGUF file, which runs on infermode's core"
    elif dtype in QUANTIZED_FORMATS:
        cpu_only = f"dtype {dtype} runs on infermode's quantized kernels"
    choice: ModeChoice = choose_device(
        device, lambda: largest_tensor_bytes(model, adapter=adapter, dtype=dtype),
        cpu_only=cpu_only)
    if choice.device == "cpu":
        native = CausalLM.from_pretrained(model, dtype=dtype, adapter=adapter, threads=threads)
        return native, choice
    from infermode._torch_lm import TorchLM

    place = device if device.split(":")[0] == choice.device else choice.device  # keep an index
    return TorchLM.from_pretrained(model, place, dtype, adapter), choice


def _check_prompt(prompt: str) -> str:
    """The prompt template, checked: fields among PROMPT_FIELDS, ``{text}`` among them."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(prompt) if name is not None}
    except ValueError as exc:
        raise ValueError(f"prompt {prompt!r} is not a valid template: {exc} (write a literal "
                         "brace as {{ or }})") from None
    unknown = sorted(fields - set(PROMPT_FIELDS))
    if unknown:
        raise ValueError(f"prompt has the field {{{unknown[0]}}}; a prompt may use "
                         f"{', '.join('{' + f + '}' for f in PROMPT_FIELDS)}")
    if "text" not in fields:
        raise ValueError("prompt has no {text} field: where should the text to translate go?")
    return prompt


def _preview(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[:width] + "...")
