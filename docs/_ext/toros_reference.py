"""The reference pages, generated from their sources each time the documentation is built, so they cannot drift:
the contract from ``proto/toros.proto``'s comments, the configuration from the settings models, the CLI from its
argument parser. Written as Markdown into ``docs/reference/generated/`` (not kept in git) when the build starts."""

from __future__ import annotations

import argparse
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

DOCS = Path(__file__).resolve().parent.parent
REPO = DOCS.parent
GENERATED = DOCS / "reference" / "generated"


# -- the contract ------------------------------------------------------------------------------------------------


def _descriptor_set() -> Any:
    """proto/toros.proto compiled with its comments (protoc's source info)."""
    import grpc_tools
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/timestamp.proto and the others
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "toros.desc"
        code = protoc.main(
            ["protoc", f"-I{REPO / 'proto'}", f"-I{well_known}", "--include_source_info",
             f"--descriptor_set_out={out}", "toros.proto"]
        )  # fmt: skip
        if code != 0:
            raise RuntimeError(f"protoc failed on proto/toros.proto ({code})")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return files.file[0]


def _comments(proto: Any) -> dict[tuple[int, ...], str]:
    return {
        tuple(location.path): " ".join(line.strip() for line in location.leading_comments.strip().splitlines())
        for location in proto.source_code_info.location
        if location.leading_comments.strip()
    }


_TYPES = {
    1: "double",
    2: "float",
    3: "int64",
    4: "uint64",
    5: "int32",
    8: "bool",
    9: "string",
    12: "bytes",
    13: "uint32",
}


def _type(field: Any) -> str:
    name = field.type_name.rsplit(".", 1)[-1] if field.type_name else _TYPES.get(field.type, str(field.type))
    return f"repeated {name}" if field.label == 3 else name


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def contract() -> str:
    proto = _descriptor_set()
    notes = _comments(proto)
    lines = [
        "# The contract: `proto/toros.proto`",
        "",
        f"Package `{proto.package}`. Generated from the proto's own comments when the documentation is built.",
        "",
        "## Service",
        "",
    ]
    for s, service in enumerate(proto.service):
        lines += [
            f"### `{service.name}`",
            "",
            notes.get((6, s), ""),
            "",
            "| RPC | request | response | |",
            "|---|---|---|---|",
        ]
        for m, method in enumerate(service.method):
            stream = "stream " if method.server_streaming else ""
            lines.append(
                f"| `{method.name}` | `{method.input_type.rsplit('.', 1)[-1]}` | `{stream}{method.output_type.rsplit('.', 1)[-1]}` "
                f"| {_cell(notes.get((6, s, 2, m), ''))} |"
            )
        lines.append("")
    lines += ["## Messages", ""]
    for i, message in enumerate(proto.message_type):
        lines += [f"### `{message.name}`", "", notes.get((4, i), ""), ""]
        if message.field:
            lines += ["| field | type | number | |", "|---|---|---|---|"]
            for f, field in enumerate(message.field):
                oneof = (
                    f" (one of `{message.oneof_decl[field.oneof_index].name}`)" if field.HasField("oneof_index") else ""
                )
                lines.append(
                    f"| `{field.name}` | `{_type(field)}` | {field.number} | {_cell(notes.get((4, i, 2, f), ''))}{oneof} |"
                )
        lines.append("")
    lines += ["## Enumerations", ""]
    for e, enum in enumerate(proto.enum_type):
        lines += [f"### `{enum.name}`", "", notes.get((5, e), ""), "", "| value | number | |", "|---|---|---|"]
        for v, value in enumerate(enum.value):
            lines.append(f"| `{value.name}` | {value.number} | {_cell(notes.get((5, e, 2, v), ''))} |")
        lines.append("")
    return "\n".join(lines)


# -- the configuration ---------------------------------------------------------------------------------------


def _annotation(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _annotation(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _annotation(typing.get_args(annotation)[0])
    if origin is not None:
        inner = ", ".join(_annotation(a) for a in typing.get_args(annotation) if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return str(annotation).replace("typing.", "")


def _default(field: Any) -> str:
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    if field.default is PydanticUndefined:
        return "required" if field.default_factory is None else "(empty)"
    value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    if isinstance(value, Path):
        return str(value)
    if field.title == "mode" or (field.description or "").startswith("every file written (octal"):
        return f"0{value:o}"
    text = repr(getattr(value, "value", value))
    return text if len(text) <= 60 else text[:57] + "..."


def _sections(model: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """Every model of the config below ``model``, with its key path."""
    from pydantic import BaseModel

    yield prefix, model
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        for candidate in [field.annotation, *typing.get_args(field.annotation)]:
            for inner in [candidate, *typing.get_args(candidate)]:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from _sections(inner, f"{prefix}.{name}" if prefix else name)


def _template_comments() -> dict[str, str]:
    """What the commented template (toros.conf.yaml) says of each key: ``section.key`` → its comment (with the
    comment lines that continue it)."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last = ""
    for line in (REPO / "toros.conf.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if last and line.index("#") > 20:  # a continuation, aligned under the comment above it
                comments[last] += " " + stripped.lstrip("# ")
            else:
                last = ""
            continue
        if not stripped or stripped.startswith("- ") or ":" not in stripped:
            last = ""
            continue
        indent = len(line) - len(line.lstrip())
        key = stripped.split(":", 1)[0].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        path = ".".join(k for _, k in stack)
        _, _, comment = stripped.partition("#")
        last = path if comment.strip() else ""
        if comment.strip():
            comments[path] = comment.strip()
    return comments


def configuration() -> str:
    from pydantic import BaseModel

    from toros.config import Config

    lines = [
        "# Configuration reference",
        "",
        "One YAML file per node (`--config FILE`, else `$TOROS_CONFIG`, else `/etc/toros/toros.conf.yaml`); "
        "`toros.conf.yaml` at the root of the repository is the commented template. Generated from the settings "
        "models the daemons validate their file against, when the documentation is built: an unknown key, a wrong "
        "type or a value out of range is refused at start with one line naming the key. A list of sections (such "
        "as `alert.observatories`) takes entries shaped as the section below of the same name.",
        "",
    ]
    seen: set[str] = set()
    template = _template_comments()
    for path, model in _sections(Config, ""):
        if path in seen:
            continue
        seen.add(path)
        title = f"`{path}`" if path else "The top level"
        doc = " ".join((model.__doc__ or "").split())
        lines += [f"## {title}", "", doc, "", "| key | type | default | |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            nested = isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
            kind = "section" if nested else f"`{_cell(_annotation(field.annotation))}`"
            said = field.description or template.get(f"{path}.{name}" if path else name, "")
            lines.append(f"| `{name}` | {kind} | `{_cell(_default(field))}` | {_cell(said)} |")
        lines.append("")
    return "\n".join(lines)


# -- the command line ----------------------------------------------------------------------------------------


def _commands(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:  # argparse keeps its subcommands here
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _commands(subparser, f"{name} {sub}")


def cli() -> str:
    from toros.cli import parser

    lines = [
        "# Command-line reference",
        "",
        "`toros` and its commands, as `--help` prints them (generated from the parser when the documentation is "
        "built; a work order's task options come from the proto). Failures are one line on stderr and a non-zero "
        "exit: 1 when a daemon is unreachable or refuses, 2 for the configuration or the usage.",
        "",
    ]
    for name, sub in _commands(parser(), "toros"):
        sub.prog = name
        lines += [f"## `{name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def generate(app: Sphinx) -> None:
    GENERATED.mkdir(parents=True, exist_ok=True)
    for name, text in (("contract.md", contract()), ("configuration.md", configuration()), ("cli.md", cli())):
        target = GENERATED / name
        if not target.exists() or target.read_text() != text:  # unchanged files are not rebuilt
            target.write_text(text)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", generate)
    return {"version": "1", "parallel_read_safe": True}
