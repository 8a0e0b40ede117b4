"""docs/configuration.md, written from deepfm/config/: every key with its type, default and the
comment the code gives it, so that the reference has one source of truth.

    python docs/config_reference.py      # rewrite docs/configuration.md
tests/test_docs.py fails while the file is not what this writes.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import sys
import tokenize
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"
sys.path.insert(0, str(ROOT))

from deepfm import config  # noqa: E402

INTRO = """# Configuration reference

Written by `python docs/config_reference.py` from `deepfm/config/` (the pydantic models that
validate every configuration); `tests/test_docs.py` fails when it is out of date. How files and
`--set` combine: [Running stages](stages.md).

Every key below is optional unless its default says *required*; an unknown key is an error that
names the closest valid one.
"""


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """Each field's comment in the class body: the comment lines just above it and the one after it."""
    source = inspect.getsource(model)
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        trailing = [comments[node.end_lineno]] if node.end_lineno in comments and not lines[
            node.end_lineno - 1].strip().startswith("#") else []
        found[node.target.id] = " ".join(above + trailing)
    return found


def type_text(annotation, metadata=()) -> str:
    """A type as a reader of YAML needs it: choices, bounds, lists, optional."""
    bounds = []
    for item in [*metadata, *getattr(annotation, "__metadata__", ())]:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)  # annotated_types' Ge, Gt, ... or a Field(ge=...)
            if value is not None:
                bounds.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0], args[1:])
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(type_text(a) for a in rest)
        return f"{text}, or null" if len(rest) < len(args) else text
    if origin is typing.Literal:
        text = " \\| ".join(f"`{a}`" for a in args)
    elif origin is list:
        text = f"list of {type_text(args[0])}"
    elif origin is tuple:
        text = f"[{', '.join(type_text(a) for a in args)}]"
    elif origin is dict:
        text = f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        text = f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    elif isinstance(annotation, type):
        text = {"str": "text", "int": "integer", "float": "number", "bool": "true/false"}.get(
            annotation.__name__, annotation.__name__)
    else:
        text = str(annotation).replace("typing.", "")
    return f"{text} ({', '.join(bounds)})" if bounds else text


def default_text(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "*required*"
    value = field.default
    if isinstance(value, BaseModel):
        return "(its defaults)"
    if value is None:
        return ""
    return f"`{json.dumps(value) if isinstance(value, list | dict | bool) else value}`"


def models_in(annotation) -> list[type[BaseModel]]:
    """The configuration models a field's type holds (a section, a list of them, an optional one)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in models_in(a)]


def _summary(models: list[type[BaseModel]]) -> str:
    """A section's meaning: the first sentence of its model's docstring."""
    doc = models[0].__doc__ if models else None
    if not doc or doc.startswith(models[0].__name__ + "("):  # pydantic's generated signature
        return ""
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ")


def render() -> str:
    out, seen, queue = [INTRO], set(), [("", config.Config)]
    while queue:
        prefix, model = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        comments = field_comments(model)
        title = f"`{prefix}`" if prefix else "Sections"
        out += [f"## {title}", "", f'<a id="{model.__name__.lower()}"></a>', ""]
        if model.__doc__ and model is not config.Config and not model.__doc__.startswith(model.__name__ + "("):
            out += [inspect.cleandoc(model.__doc__), ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            key = f"{prefix}.{name}" if prefix else name
            meaning = comments.get(name, "") or _summary(models_in(field.annotation))
            meaning = meaning.replace("|", "\\|")
            out.append(f"| `{key}` | {type_text(field.annotation, field.metadata)} | {default_text(field)} | "
                       f"{meaning} |")
            origins = {typing.get_origin(field.annotation)} | {typing.get_origin(a) for a in
                                                                typing.get_args(field.annotation)}
            suffix = "[]" if list in origins else ".<key>" if dict in origins else ""
            queue += [(key + suffix, nested) for nested in models_in(field.annotation)]
        out.append("")
    return "\n".join(out)


def main() -> None:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
