"""Mutation testing of the pure decision code: every mutant must fail a pure test.

Each mutant changes one thing in a target: a comparison flipped (< <= > >= == !=), `and` <-> `or`,
`min` <-> `max`, an integer constant moved by one, `+ 1` <-> `- 1`. For each, the target's pure
tests run against a copy of the package holding the mutant (the working tree is never touched);
a mutant they do not fail survives and is printed, unless a test shows it equivalent (EQUIVALENT
below). Exit 1 when any survives.

    python scripts/mutate_planning.py [--target planning|bounds|normalize ...] [--list]

Written here rather than taken from mutmut/cosmic-ray: neither is installed, and these few operators
over three small targets need no mutation database or runner configuration.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    path: str  # inside the repository
    functions: tuple[str, ...]  # only these functions (and module-level constants); () = the whole module
    tests: tuple[str, ...]
    constants: tuple[str, ...] = ()  # module-level names whose values are mutated too


TARGETS = {
    "planning": Target("transfer_daemon/ingest/planning.py", (),
                       ("tests/test_ingest_planning.py", "tests/test_verify_planning.py")),
    "bounds": Target("transfer_daemon/model.py", ("within_bounds", "parse_uint"), ("tests/test_bounds.py",),
                     ("MAX_BLOCK_NUMBER", "MAX_LOG_INDEX", "MAX_TIME_STAMP", "UINT256_MAX")),
    "normalize": Target("transfer_daemon/upstream/normalize.py",
                        ("_dec", "_hex", "_strict_uint", "_strict_hex", "_log_block", "_block_or_none"),
                        ("tests/test_upstream_normalize.py", "tests/test_bounds.py"),
                        ("MAX_DECIMAL_DIGITS", "MAX_HEX_DIGITS")),
}

_FLIPS: dict[type, tuple[type, ...]] = {
    ast.Lt: (ast.LtE, ast.Gt), ast.LtE: (ast.Lt, ast.GtE), ast.Gt: (ast.GtE, ast.Lt), ast.GtE: (ast.Gt, ast.LtE),
    ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,),
}
_SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
           ast.And: "and", ast.Or: "or", ast.Add: "+", ast.Sub: "-"}


_PLANNING = "transfer_daemon/ingest/planning.py"
_FIRST = "if high_block <= low_block + 1 or high_time <= low_time:"
_CLAMP = "return max(low_block + 1, min(high_block, math.ceil(estimate)))"
_CLAMP_SHOWN = "tests/test_verify_planning.py::test_block_at_time_bounds_and_degenerate_samples"
#: Mutants that cannot change behaviour, each shown so by a comment in the test named:
#: (path, the original line stripped, column in it, mutation) -> the test.
EQUIVALENT = {
    (_PLANNING, _FIRST, 3, "<= -> <"): _CLAMP_SHOWN,
    (_PLANNING, _FIRST, 17, "+ 1 -> - 1"): _CLAMP_SHOWN,
    (_PLANNING, _FIRST, 29, "1 -> 0"): _CLAMP_SHOWN,
    (_PLANNING, _CLAMP, 11, "+ 1 -> - 1"): _CLAMP_SHOWN,
    (_PLANNING, _CLAMP, 23, "1 -> 0"): _CLAMP_SHOWN,
    (_PLANNING, "lo = max(cursor.backfilled_block, oldest_stored if oldest_stored is not None else 0)", 82, "0 -> -1"):
        "tests/test_verify_planning.py::test_settled_window_of_one_block_and_from_block_zero",
    ("transfer_daemon/upstream/normalize.py",
     'if not isinstance(value, str) or value[:2] != "0x" or not (value[2:].isalnum() or value == "0x"):', 65, "2 -> 1"):
        "tests/test_bounds.py::test_the_reason_names_the_first_bad_field_past_a_full_width_number",
}


@dataclass(frozen=True)
class Mutant:
    line: int
    column: int  # in the stripped line
    text: str  # the original line, stripped
    what: str
    source: str  # the whole mutated module


def _scopes(tree: ast.Module, target: Target) -> Iterator[ast.AST]:
    """The nodes mutated: every function named in the target (all when none), and the constants."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and (not target.functions or node.name in target.functions):
            yield node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            names = [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                     if isinstance(t, ast.Name)]
            if not target.functions and not target.constants or set(names) & set(target.constants):
                yield node


def _edits(node: ast.AST) -> Iterator[tuple[str, callable]]:
    """(description, edit) for each mutation of this one node; `edit` changes a deep copy's node."""
    if isinstance(node, ast.Compare):
        for index, op in enumerate(node.ops):
            for new in _FLIPS.get(type(op), ()):
                def flip(n: ast.Compare, i: int = index, new: type = new) -> None:
                    n.ops[i] = new()
                yield f"{_SYMBOL[type(op)]} -> {_SYMBOL[new]}", flip
    elif isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        yield f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[new]}", lambda n, new=new: setattr(n, "op", new())
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max"):
        other = "max" if node.func.id == "min" else "min"
        yield f"{node.func.id} -> {other}", lambda n, other=other: setattr(n.func, "id", other)
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        for delta in (1, -1):
            yield f"{node.value} -> {node.value + delta}", lambda n, d=delta: setattr(n, "value", n.value + d)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub) and any(
            isinstance(side, ast.Constant) and side.value == 1 for side in (node.left, node.right)):
        new = ast.Sub if isinstance(node.op, ast.Add) else ast.Add
        yield f"{_SYMBOL[type(node.op)]} 1 -> {_SYMBOL[new]} 1", lambda n, new=new: setattr(n, "op", new())


def mutants(target: Target) -> list[Mutant]:
    text = (ROOT / target.path).read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    found = []
    points = [node for scope in _scopes(tree, target) for node in ast.walk(scope)]
    for position, node in enumerate(points):
        edits = list(_edits(node))
        if not edits:
            continue
        line = lines[node.lineno - 1]
        indent = len(line) - len(line.lstrip())
        for what, edit in edits:
            mutated = copy.deepcopy(tree)
            twin = [n for scope in _scopes(mutated, target) for n in ast.walk(scope)][position]
            edit(twin)
            found.append(Mutant(node.lineno, node.col_offset - indent, line.strip(), what, ast.unparse(mutated)))
    return found


def _survives(workdir: Path, target: Target, mutant: Mutant) -> bool:
    """Run the target's tests on the mutant in a forked child: the parent has imported pytest and
    the libraries once, the child imports the package afresh from `workdir` (no bytecode is written,
    so no stale .pyc can stand in for the mutant)."""
    (workdir / target.path).write_text(mutant.source)
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.chdir(workdir)
        sys.path.insert(0, str(workdir))
        os._exit(int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *target.tests])))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise RuntimeError(f"pytest could not run the mutant at line {mutant.line} ({mutant.what}): exit {code}")
    return code == 0


def run_target(name: str, target: Target, workdir: Path) -> list[Mutant]:
    original = (workdir / target.path).read_text()
    found = mutants(target)
    survivors, equivalent = [], []
    started = time.monotonic()
    try:
        for mutant in found:
            if _survives(workdir, target, mutant):
                shown = EQUIVALENT.get((target.path, mutant.text, mutant.column, mutant.what))
                (survivors if shown is None else equivalent).append((mutant, shown))
    finally:
        (workdir / target.path).write_text(original)
    print(f"{name}: {len(found)} mutants, {len(found) - len(survivors) - len(equivalent)} killed, "
          f"{len(equivalent)} equivalent, {len(survivors)} survived ({time.monotonic() - started:.0f}s)")
    for mutant, shown in equivalent:
        print(f"  equivalent {target.path}:{mutant.line}:{mutant.column}: {mutant.what} (shown in {shown})")
    for mutant, _ in survivors:
        print(f"  survivor {target.path}:{mutant.line}:{mutant.column}: {mutant.what}  | {mutant.text}")
    return [mutant for mutant, _ in survivors]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="default: all")
    parser.add_argument("--list", action="store_true", help="print the mutants without running the tests")
    args = parser.parse_args(argv)
    names = args.target or sorted(TARGETS)
    if args.list:
        for name in names:
            for mutant in mutants(TARGETS[name]):
                print(f"{name} {TARGETS[name].path}:{mutant.line}:{mutant.column}: {mutant.what}  | {mutant.text}")
        return 0
    sys.dont_write_bytecode = True
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the pure tests use no plugin; loading them costs 1 s
    for library in ("psycopg", "requests", "flask", "responses"):  # imported once, before the forks
        __import__(library)
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        workdir = Path(tmp)
        shutil.copytree(ROOT / "transfer_daemon", workdir / "transfer_daemon",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "tests", workdir / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", workdir / "pyproject.toml")
        survivors = [s for name in names for s in run_target(name, TARGETS[name], workdir)]
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
