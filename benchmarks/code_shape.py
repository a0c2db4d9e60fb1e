"""The shape of the code, as the architecture issue measures it: lines and files, files over 400 lines, functions
over 50 lines, the largest classes, `type: ignore` comments, of `toros/` (generated code excepted), at the
working tree or at any git revision (``--rev``), side by side (``--rev A --rev B``).

    .venv/bin/python benchmarks/code_shape.py --rev e4f1aec --rev HEAD
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Shape:
    files: int = 0
    lines: int = 0
    long_files: list[tuple[str, int]] = field(default_factory=list)
    long_functions: list[tuple[str, int]] = field(default_factory=list)
    classes: list[tuple[str, int, int]] = field(default_factory=list)  # name, lines, methods
    ignores: int = 0


def sources(rev: str | None) -> dict[str, str]:
    """The Python files of toros/ (generated excepted) at a revision, or in the working tree."""
    if rev is None:
        return {
            str(p.relative_to(REPO)): p.read_text()
            for p in (REPO / "toros").rglob("*.py")
            if "generated" not in p.parts
        }
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "toros"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.split()
    return {
        name: subprocess.run(
            ["git", "show", f"{rev}:{name}"], capture_output=True, text=True, check=True, cwd=REPO
        ).stdout
        for name in names
        if name.endswith(".py") and "/generated/" not in name
    }


def measure(files: dict[str, str]) -> Shape:
    shape = Shape(files=len(files))
    for name, text in files.items():
        count = text.count("\n")
        shape.lines += count
        shape.ignores += text.count("type: ignore")
        if count > 400:
            shape.long_files.append((name, count))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 50:
                    shape.long_functions.append((f"{name}:{node.name}", length))
            elif isinstance(node, ast.ClassDef):
                methods = sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in node.body)
                shape.classes.append(
                    (f"{name}:{node.name}", (node.end_lineno or node.lineno) - node.lineno + 1, methods)
                )
    shape.long_files.sort(key=lambda item: -item[1])
    shape.long_functions.sort(key=lambda item: -item[1])
    shape.classes.sort(key=lambda item: -item[1])
    return shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", action="append", help="a git revision (repeat to compare); default the working tree")
    revs = parser.parse_args().rev or [None]
    shapes = {rev or "working tree": measure(sources(rev)) for rev in revs}
    print("| measure | " + " | ".join(shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    rows = {
        "Python files in toros/": lambda s: s.files,
        "lines": lambda s: s.lines,
        "files over 400 lines": lambda s: len(s.long_files),
        "functions over 50 lines": lambda s: len(s.long_functions),
        "`type: ignore` comments": lambda s: s.ignores,
        "largest class (lines, methods)": lambda s: (
            f"{s.classes[0][0].split(':')[1]} ({s.classes[0][1]}, {s.classes[0][2]})"
        ),
    }
    for label, value in rows.items():
        print(f"| {label} | " + " | ".join(str(value(s)) for s in shapes.values()) + " |")
    for rev, shape in shapes.items():
        print(f"\n{rev}: files over 400 lines: " + ", ".join(f"{n} ({c})" for n, c in shape.long_files))
        print(f"{rev}: functions over 50 lines: " + ", ".join(f"{n} ({c})" for n, c in shape.long_functions[:12]))
        print(f"{rev}: largest classes: " + ", ".join(f"{n} ({c} lines, {m} methods)" for n, c, m in shape.classes[:5]))


if __name__ == "__main__":
    main()
