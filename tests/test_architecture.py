"""House rules that keep the layers apart, checked on the source tree:

* Numba is imported only under ``engine/backends/``;
* Rich and Typer only under ``cli/``;
* the engine never prints (it yields events; ``cli/`` renders them).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINE_FILES = sorted((ROOT / "engine").rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def print_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "print"
    ]


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", ENGINE_FILES, ids=relative)
def test_engine_module_respects_layers(path):
    modules = imported_modules(path)
    in_backends = "engine/backends/" in relative(path)
    if not in_backends:
        assert "numba" not in modules, "Numba may be imported only under engine/backends/"
        assert "numba_cuda" not in modules
    assert not modules & {"rich", "typer", "click"}, "Rich/Typer belong to cli/"
    assert print_calls(path) == [], "the engine never prints: yield events instead"


def test_cli_does_not_import_numba_directly():
    for path in sorted((ROOT / "cli").rglob("*.py")):
        assert "numba" not in imported_modules(path), relative(path)
