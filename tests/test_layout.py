"""The floors of the house (README "Layout"), checked on every import the package makes.

Every `import` and `from ... import` in ipcjanitor/, lazy ones inside functions included, is
read with `ast` and resolved to the module it names; an arrow the rules do not allow fails,
with the file and line. The rules are the README's, as data.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ipcjanitor"

# What every module may import: the ground floor, modules that know nothing of the rest.
GROUND = {"model", "errors", "state", "chase", "unitnames", "escape", "accounts", "clock",
          "_sysvipc"}  # fmt: skip
# Each wing (or top-level module) and the wings it may import besides the ground floor and
# itself. A floor may import every floor below it, never one above.
FLOORS: dict[str, set[str]] = {
    "kernel": set(),
    "policy": set(),
    "output": set(),
    "systemd": set(),
    "engine": {"kernel", "policy", "output", "systemd"},
    "hook": {"kernel", "policy", "output", "systemd", "engine"},
    "learn": {"kernel", "policy", "output", "systemd", "engine"},
    "commands": {"kernel", "policy", "output", "systemd", "engine", "hook", "learn"},
    "cli": {"commands", "hook", "output"},
    "entry": {"cli", "hook", "commands"},
    "__main__": {"entry"},
}
# Third-party or standard modules only one place may import.
ONLY_IN = {"pystemd": {"systemd.bus"}, "argparse": {"cli", "commands"}}


def _module(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package_dir: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) of every import in the file; package-relative names for our own."""
    me = _module(path, package_dir).split(".") if _module(path, package_dir) else []
    package = me if path.name == "__init__.py" else me[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
                names = [f"{target}.{a.name}".lstrip(".") for a in node.names]
                found += [(node.lineno, "ipcjanitor." + n) for n in names]
            else:
                found.append((node.lineno, node.module or ""))
    return found


def _wing(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def _allowed(importer: str, imported: str) -> bool:
    """May module `importer` (package-relative) import our module `imported`?"""
    target = imported.split(".")
    # `from . import x` names a module or a name in the package: take the longest module
    while target and not (
        (PACKAGE.joinpath(*target).with_suffix(".py")).exists()
        or PACKAGE.joinpath(*target).is_dir()
    ):
        target.pop()
    if not target:
        return True  # a name defined in ipcjanitor/__init__.py
    name = ".".join(target)
    if _wing(name) == _wing(importer) or name in GROUND or _wing(name) in GROUND:
        return True
    rules = FLOORS.get(_wing(importer), set())
    return _wing(name) in rules or name in rules


def forbidden_arrows() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _module(path)
        for line, imported in _imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            top = imported.split(".")[0]
            if top in ONLY_IN and not {importer, _wing(importer)} & ONLY_IN[top]:
                bad.append(f"{where}: {importer} imports {top} (only {ONLY_IN[top]} may)")
            if imported.startswith("ipcjanitor."):
                inner = imported.removeprefix("ipcjanitor.")
                if not _allowed(importer, inner):
                    bad.append(f"{where}: {importer} imports {inner}")
    return bad


def test_every_import_follows_the_floors() -> None:
    assert forbidden_arrows() == []


def test_every_module_is_on_a_floor() -> None:
    """A new wing or top-level module must be given its floor here (and in the README)."""
    wings = {_wing(_module(p)) for p in PACKAGE.rglob("*.py") if _module(p)}
    assert wings - set(FLOORS) - GROUND == set()


def test_the_check_sees_a_forbidden_arrow(tmp_path: Path) -> None:
    """The rules bite: a floor importing one above it, or a wing beside it."""
    assert not _allowed("kernel.processes", "engine.decide")
    assert not _allowed("policy.model", "hook.run")
    assert not _allowed("kernel.processes", "systemd.bus")
    assert not _allowed("hook.run", "cli")
    assert not _allowed("engine.run", "hook.gate")
    assert _allowed("engine.run", "kernel.processes")
    assert _allowed("kernel.processes", "unitnames")


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Lazy imports in functions, relative ones and `from . import x` are all read."""
    wing = tmp_path / "ipcjanitor" / "kernel"
    wing.mkdir(parents=True)
    module = wing / "probe.py"
    module.write_text(
        "import argparse\n"
        "from ..engine import decide\n"
        "def f():\n    from ..hook.run import run_hook\n    import pystemd\n"
    )
    found = _imports(module, tmp_path / "ipcjanitor")
    assert [m for _, m in found] == [
        "argparse", "ipcjanitor.engine.decide", "ipcjanitor.hook.run.run_hook", "pystemd"
    ]  # fmt: skip


def test_subpackages_have_empty_inits() -> None:
    """The hook's no-owner path pays for every package it enters: keep them empty."""
    inits = [p for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE]
    assert inits and all(p.read_text() == "" for p in inits)


FUNCTION_LINES = 60
# A function still longer, each with the change that splits it (an entry, not a habit)
LONG_FOR_NOW: set[str] = set()


def long_functions(package: Path = PACKAGE) -> list[str]:
    """Every function (methods and nested ones too) longer than FUNCTION_LINES lines."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                where = f"{path.relative_to(package)}:{node.name}"
                if length > FUNCTION_LINES and where not in LONG_FOR_NOW:
                    found.append(f"{where} is {length} lines")
    return found


def test_no_function_is_longer_than_a_screen() -> None:
    assert long_functions() == []


def test_the_length_rule_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def f() -> None:\n{body}\n")
    assert long_functions(tmp_path) == [f"long.py:f is {FUNCTION_LINES + 1} lines"]
