"""Chat templates: the Jinja programs in ``tokenizer_config.json`` that turn messages into a prompt.

A template downloaded with a checkpoint is untrusted code, so it runs in Jinja's immutable sandbox
with the same environment transformers gives it (``trim_blocks``, ``lstrip_blocks``, the
``loopcontrols`` extension, ``raise_exception``, ``strftime_now``, a ``tojson`` that does not
HTML-escape, and the ``{% generation %}`` tag), so a template renders here as it does in
``tokenizer.apply_chat_template``.
"""
from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import jinja2


def render_chat(template: str, messages: Sequence[Mapping[str, Any]],
                add_generation_prompt: bool = True, bos_token: str = "", eos_token: str = "",
                **extra: Any) -> str:
    """Renders ``messages`` (dicts with ``role`` and ``content``) with a chat template.

    ``extra`` is passed to the template as more variables (``tools``, ``documents``, ...). A
    template that rejects the conversation (its ``raise_exception``) or fails raises ValueError.

        >>> render_chat(template, [{"role": "user", "content": "Hi"}], eos_token="<|im_end|>")
        '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    import jinja2

    if not isinstance(template, str):
        raise TypeError(f"template must be a str, got {type(template).__name__}")
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise ValueError(f"messages[{i}] must be a dict with a 'role', got {message!r}")
    try:
        compiled = _compile(template)
        return compiled.render(messages=[dict(m) for m in messages],
                               add_generation_prompt=add_generation_prompt,
                               bos_token=bos_token, eos_token=eos_token, **extra)
    except jinja2.TemplateError as exc:
        raise ValueError(f"the chat template failed: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a template is a program: any error is its failure
        # A TypeError from an operator on the wrong values, RecursionError from nesting too
        # deep to parse, the sandbox's OverflowError for a huge range(), ...
        raise ValueError(f"the chat template failed: {type(exc).__name__}: {exc}") from exc


class _TemplateDict:
    """``dict`` for templates without the type object itself, which would expose its attributes
    (transformers does the same)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> "jinja2.Template":
    """Compiles once per template string: compiling costs far more than rendering."""
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    import jinja2.utils
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks in
        transformers; rendering only needs its body."""

        tags = {"generation"}

        def parse(self, parser: Any) -> jinja2.nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body
                                          ).set_lineno(lineno)

        def _body(self, caller: Callable[[], str]) -> str:
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """Refuses underscore attributes, which could reach CPython internals (as transformers)."""

        def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - Jinja's signature trick
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                _check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            _check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot set underscore attributes on a namespace: {name!r}")

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: Optional[int] = None,
               separators: Optional[List[str]] = None, sort_keys: bool = False) -> str:
        # Jinja's own tojson escapes <, > and & for HTML, which would change tool schemas.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["namespace"] = Namespace
    env.globals["dict"] = _TemplateDict()
    return env.from_string(template)
