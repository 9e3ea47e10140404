"""JSON from checkpoint files, where every way a file can fail to parse is one ValueError that
names it.

``json`` fails in three ways on a bad file: JSONDecodeError (bad syntax) and UnicodeDecodeError
(bad bytes), both ValueErrors that do not say which file, and RecursionError for arrays or
objects nested deeper than the interpreter's recursion limit (a file of a few thousand "["
parses that far). A file from the internet must give one clear error for all three.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union


def parse_json(raw: Union[bytes, str], where: str) -> Any:
    """The value of JSON text ``raw`` (UTF-8 bytes or a str); ``where`` names it in errors
    ("config.json", "model.safetensors: the header").

        >>> parse_json(b'{"r": 8}', "adapter_config.json")
        {'r': 8}
    """
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{where} is not valid JSON: it nests arrays or objects too deeply to "
                         "parse") from None


def read_json(path: Path) -> Any:
    """The value of the JSON file ``path``; a file that does not parse raises ValueError
    naming it."""
    return parse_json(path.read_bytes(), str(path))
