"""House rules that keep the layers apart, checked on the source tree:

* Numba is imported only under ``engine/backends/``;
* Rich and Typer only under ``cli/``;
* the engine never prints (it yields events; ``cli/`` renders them);
* no import cycle among the modules of ``cli/`` and ``engine/`` (imports inside functions count);
* each stage of ``engine/`` imports only the stages it builds on (:data:`STAGE_ORDER`);
* the top of ``engine/`` holds at most four modules: what every stage shares.
"""

import ast
from collections.abc import Iterator
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


# --------------------------------------------------------------------------------------------
# The import graph
# --------------------------------------------------------------------------------------------

#: engine's stages, each building only on those before it (README, "Architecture")
STAGE_ORDER = (
    "shared",  # engine/spec.py, engine/rng.py
    "backends",
    "model",
    "formats",
    "data",
    "config",
    "update",
    "training",
    "experiments",
    "bench",
)
MAX_TOP_LEVEL_MODULES = 4


def module_name(path: Path) -> str:
    """The import name of a file of ``cli/`` or ``engine/``: ``dnupdate.`` + its path."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["dnupdate", *parts])


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path for top in ("cli", "engine") for path in (ROOT / top).rglob("*.py")
    }


def imported_project_modules(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The project modules ``path`` imports, anywhere in the file: ``from a.b import c`` names
    ``a.b.c`` when that is a module, else ``a.b``."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            candidates = [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            candidates = [[f"{node.module}.{alias.name}", node.module] for alias in node.names]
        else:
            continue
        for names in candidates:
            found = next((name for name in names if name in modules), None)
            if found is not None:
                yield found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {
        name: set(imported_project_modules(path, modules)) - {name}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph[child])))
    return None


def stage_of(module: str) -> str | None:
    """The engine stage of a module (None outside ``engine``)."""
    parts = module.split(".")[1:]
    if parts[0] != "engine":
        return None
    if len(parts) == 1 or not (ROOT / "engine" / parts[1]).is_dir():
        return "shared"
    return parts[1]


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_cli_or_engine():
    graph = import_graph()
    assert "dnupdate.cli.main" in graph and "dnupdate.engine.training.session" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_engine_stages_import_only_the_stages_they_build_on():
    rank = {stage: index for index, stage in enumerate(STAGE_ORDER)}
    wrong = []
    for module, imports in import_graph().items():
        stage = stage_of(module)
        if stage is None:
            continue
        assert stage in rank, f"{module}: engine/{stage}/ is not in STAGE_ORDER (add it)"
        wrong += [
            f"{module} ({stage}) imports {target} ({stage_of(target)})"
            for target in sorted(imports)
            if target.startswith("dnupdate.cli")
            or (stage_of(target) and rank[stage_of(target)] > rank[stage])
        ]
    assert wrong == []


PYTHON_FILES = sorted(
    path
    for top in ("cli", "engine", "tests", "scripts")
    for path in (ROOT / top).rglob("*.py")
    if ".venv" not in path.parts
)


@pytest.mark.parametrize("path", PYTHON_FILES, ids=relative)
def test_project_imports_use_the_one_import_name(path):
    """``cli`` and ``engine`` are ``dnupdate.cli`` and ``dnupdate.engine`` (the wheel installs
    nothing else at the top level): a bare ``import engine`` would load a second copy of a
    module in the checkout and fail in the installed wheel."""
    assert not imported_modules(path) & {"cli", "engine"}


def test_engine_top_level_holds_only_shared_modules():
    top = sorted(p.name for p in (ROOT / "engine").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
