"""The package's layout holds: few top-level modules, layers that point one way, short functions."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "transfer_daemon"
#: each layer may import its own and the layers below it, never one above
LAYERS = [
    {"cli"},
    {"daemon", "demo", "simulate"},
    {"ingest", "api", "report"},
    {"store", "upstream", "cache", "db", "state", "metrics"},
    {"model", "config", "errors", "backoff", "redact"},
]
#: what the simulator may import of the product
SIMULATOR_MAY_IMPORT = {"model", "simulate"}
MAX_FUNCTION_LINES = 40


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _top(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """The top-level parts of transfer_daemon this module imports (at any depth in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transfer_daemon"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("transfer_daemon.")}
    return found


def _layer(part: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if part in layer), None)


def test_at_most_ten_top_level_modules() -> None:
    modules = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= 10, sorted(modules)


def test_layers_point_one_way() -> None:
    wrong = []
    for path in _modules():
        here = _top(path)
        if here in ("__init__", "simulate"):
            continue
        for part in _imports(path) - {here}:
            if _layer(part) is None or _layer(part) < _layer(here):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {part}")
    assert not wrong, wrong


def test_errors_and_redact_depend_on_nothing_of_ours() -> None:
    for name in ("errors.py", "redact.py", "backoff.py"):
        assert _imports(PACKAGE / name) <= {name.removesuffix(".py")}, name


def test_the_simulator_shares_only_model() -> None:
    wrong = {str(p.relative_to(PACKAGE)): _imports(p) - SIMULATOR_MAY_IMPORT
             for p in (PACKAGE / "simulate").rglob("*.py")}
    assert not {k: v for k, v in wrong.items() if v}, wrong


def test_no_function_is_over_forty_lines() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name} {lines} lines")
    assert not long, long


def test_no_two_modules_share_a_name() -> None:
    names: dict[str, list[str]] = {}
    for path in _modules():
        if path.name != "__init__.py":
            names.setdefault(path.name, []).append(str(path.relative_to(PACKAGE)))
    assert not {k: v for k, v in names.items() if len(v) > 1}
