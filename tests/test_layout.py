"""The package's layout is its architecture: sub-packages by stage, each importing only the stages
below it, no import circle between modules, and the tables over results free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "workflow" / "fashion_cnn"
# Bottom to top: a stage may import the stages before it, never one after it.
STAGES = ["core", "config", "data", "models", "training", "evaluation", "results", "tools"]
# Modules whose imports (at the top and inside functions) must load no torch.
TORCH_FREE = [
    "fashion_cnn.results.summary",
    "fashion_cnn.results.tables",
    "fashion_cnn.results.stats",
    "fashion_cnn.results.comparisons",
    "fashion_cnn.results.ledger",
    "fashion_cnn.results.pages",
    "fashion_cnn.config.validation",
    "fashion_cnn.config.schema",
    "fashion_cnn.config.checks",
    "fashion_cnn.config.site",
    "fashion_cnn.config.settings",
    "fashion_cnn.config.sweeps",
    "fashion_cnn.config.waiting",  # runs before torch loads: it decides OpenMP's wait policy
]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every fashion_cnn module ``path`` imports (anywhere in it), with the line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("fashion_cnn"):
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    found.append((candidate if candidate in MODULES else node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("fashion_cnn")]
    return found


MODULES = _modules()


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_every_module_belongs_to_a_stage_or_is_the_command_line():
    loose = [m for m in MODULES if _stage(m) is None]
    assert sorted(loose) == ["fashion_cnn", "fashion_cnn.__main__", "fashion_cnn.cli"]
    for stage in STAGES:
        doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text()))
        assert doc and "May import" in doc, f"fashion_cnn.{stage} says what it may import"


def test_a_stage_imports_only_the_stages_below_it():
    wrong = []
    for module, path in MODULES.items():
        here = _stage(module)
        if here is None:
            continue
        for imported, line in _imports(path):
            there = _stage(imported)
            if there is not None and STAGES.index(there) > STAGES.index(here):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({here}) imports {imported}")
    assert not wrong, "a stage imports one above it:\n" + "\n".join(wrong)


def test_no_import_circle_between_modules():
    graph = {m: {i for i, _ in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    # a package's __init__ is imported on the way to any of its modules: not an edge of its own
    graph = {m: {i for i in edges if not m.startswith(i + ".")} for m, edges in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                return path[path.index(other) :] + [other]
            if other not in state and (circle := visit(other)):
                return circle
        state[module] = 2
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            circle = visit(module)
            assert circle is None, "import circle: " + " -> ".join(circle)


@pytest.mark.slow
@pytest.mark.parametrize("module", TORCH_FREE)
def test_the_module_loads_no_torch(module):
    """Run in a fresh interpreter: importing it (and what it imports) must not load torch."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"importing {module} loaded torch"


# ----------------------------------------------------------------------------- function shapes

LONGEST_FUNCTION = 60  # lines, docstring included
MOST_POSITIONAL = 5  # parameters a caller may pass by position (self and cls aside)


def _functions():
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path.relative_to(PACKAGE), node


def test_no_function_is_longer_than_a_screen():
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, node in _functions()
        if node.end_lineno - node.lineno + 1 > LONGEST_FUNCTION
    ]
    assert not long, f"functions over {LONGEST_FUNCTION} lines (split them):\n" + "\n".join(long)


def test_no_function_takes_more_than_five_positional_arguments():
    """Past five, a call reads as a row of unnamed values: the rest are keyword-only."""
    wide = []
    for path, node in _functions():
        names = [a.arg for a in node.args.posonlyargs + node.args.args]
        count = len(names) - (1 if names and names[0] in ("self", "cls") else 0)
        if count > MOST_POSITIONAL:
            wide.append(f"{path}:{node.lineno} {node.name} ({count} positional)")
    assert not wide, "make the later parameters keyword-only (after *):\n" + "\n".join(wide)


def _unexplained_imports(source: str) -> list[int]:
    """Lines of imports inside functions with no comment saying why: on the import's line or the
    line above it; an import that follows another import directly shares that one's comment."""
    lines = source.splitlines()
    missing = []

    def visit(body: list[ast.stmt], in_function: bool) -> None:
        explained = False
        for statement in body:
            if isinstance(statement, ast.Import | ast.ImportFrom) and in_function:
                line = statement.lineno - 1
                own = "#" in lines[line] or lines[line - 1].strip().startswith("#")
                explained = own or explained
                if not explained:
                    missing.append(statement.lineno)
                continue
            explained = False
            inner = isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef) or in_function
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(statement, field, None)
                if isinstance(children, list) and children and isinstance(children[0], ast.AST):
                    if field == "handlers":
                        for handler in children:
                            visit(handler.body, inner)
                    else:
                        visit(children, inner)

    visit(ast.parse(source).body, False)
    return missing


def test_an_import_inside_a_function_says_what_it_avoids():
    unexplained = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in MODULES.values()
        for line in _unexplained_imports(path.read_text())
    ]
    assert not unexplained, (
        "import at the top of the module, or say in a comment which cycle or cost it avoids:\n"
        + "\n".join(unexplained)
    )


def test_the_import_rule_catches_an_unexplained_import():
    source = (
        "def f():\n    import os\n    return os\n\n"
        "def g():\n    # torch only here: a second to import\n    import torch\n    import numpy\n"
        "    return torch, numpy\n"
    )
    assert _unexplained_imports(source) == [2]
