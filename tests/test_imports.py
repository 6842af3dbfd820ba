"""Imports: every module loads, no cycle, the layers point one way.

The project reads in one direction (docs/design.md, "Where it lives"):
data -> layers -> compressors -> models / tokenizer -> training -> export
-> experiments -> serving -> pipelines. A module may import its own
package and the packages before it, never one after it; `hisac_tf` never
imports `pipelines` or `serving`. The checks read module-level imports
with `ast` (no import needed), and fresh interpreters prove that every
module loads on its own, whatever is imported first.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("hisac_tf", "pipelines", "serving")

# Rank of each part: a module may import parts of its own rank or lower.
# `hisac_tf` itself, config, json_io and metrics are the base every part
# may use.
RANKS = {
    "hisac_tf": 0,
    "hisac_tf.behaviors": 0,
    "hisac_tf.buckets": 0,
    "hisac_tf.config": 0,
    "hisac_tf.feature_config": 0,
    "hisac_tf.json_io": 0,
    "hisac_tf.metrics": 0,
    "hisac_tf.data": 1,
    "hisac_tf.layers": 2,
    "hisac_tf.compressors": 3,
    "hisac_tf.models": 4,
    "hisac_tf.tokenizer": 4,
    "hisac_tf.training": 5,
    "hisac_tf.export": 6,
    "hisac_tf.experiments": 7,
    "serving": 8,
    "pipelines": 9,
}


def module_files() -> dict[str, str]:
    """{module name: path} of every .py file of the three packages."""
    modules = {}
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, ROOT)[: -len(".py")].split(
                    os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def imported_names(node: ast.AST, modules=MODULES) -> list[str]:
    """Project modules that one import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if project(a.name)]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and \
            node.module and project(node.module):
        names = [node.module]
        for alias in node.names:  # `from package import submodule`
            full = f"{node.module}.{alias.name}"
            if full in modules:
                names.append(full)
        return names
    return []


def module_level_imports(path: str) -> list[tuple[int, str]]:
    """(line, module) of the project imports run when the module loads."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []
    # Module-level statements, including those inside if/try blocks.
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                             ast.ClassDef, ast.Lambda)):
            continue
        found += [(node.lineno, n) for n in imported_names(node)]
        stack.extend(ast.iter_child_nodes(node))
    return sorted(found)


def function_level_imports(path: str) -> list[tuple[int, str]]:
    """(line, module) of project imports inside functions or methods."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                found += [(node.lineno, n) for n in imported_names(node)]
    return sorted(set(found))


def import_graph(modules=MODULES) -> dict[str, set]:
    graph = {}
    for name, path in modules.items():
        graph[name] = {
            target for _, target in module_level_imports(path)
            if target in modules and target != name
        }
    return graph


def cycles(graph: dict[str, set]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def part(module: str) -> str:
    """The entry of RANKS a module belongs to: `hisac_tf`, `hisac_tf.<x>`
    (a top-level module or a subpackage of hisac_tf), `serving`,
    `pipelines`."""
    parts = module.split(".")
    name = ".".join(parts[:2]) if parts[0] == "hisac_tf" else parts[0]
    if name not in RANKS:
        raise KeyError(f"{module} has no rank in RANKS: add {name}")
    return name


def rank(module: str) -> int:
    return RANKS[part(module)]


def layering_problems(modules=MODULES, functions: bool = False) -> list[str]:
    """Imports of a later layer (with `functions`, inside functions too)."""
    problems = []
    for name, path in sorted(modules.items()):
        found = module_level_imports(path)
        if functions:
            found += function_level_imports(path)
        for line, target in found:
            if part(target) != part(name) and rank(target) > rank(name):
                problems.append(
                    f"{os.path.relpath(path, ROOT)}:{line}: {name} imports "
                    f"{target}, a later layer")
    return problems


# ------------------------------------------------------------ static checks
def test_rank_refuses_an_unknown_part():
    with pytest.raises(KeyError, match="hisac_tf.newpart"):
        rank("hisac_tf.newpart.module")


def test_every_module_has_a_rank():
    unranked = []
    for name in MODULES:
        try:
            rank(name)
        except KeyError as e:
            unranked.append(str(e))
    assert unranked == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_layers_point_one_way():
    assert layering_problems() == []


@pytest.mark.parametrize("importer, forbidden", [
    pytest.param("hisac_tf", "pipelines", id="hisac_tf-not-pipelines"),
    pytest.param("hisac_tf", "serving", id="hisac_tf-not-serving"),
    pytest.param("serving", "pipelines", id="serving-not-pipelines"),
])
def test_library_never_imports_its_callers(importer, forbidden):
    found = [
        f"{os.path.relpath(path, ROOT)}:{line}: {target}"
        for name, path in MODULES.items() if name.split(".")[0] == importer
        for line, target in module_level_imports(path)
        if target.split(".")[0] == forbidden
    ]
    assert found == []


# Imports inside functions hide cycles and wrong-way imports from the
# checks above.
def test_no_function_level_project_imports():
    found = [
        f"{os.path.relpath(path, ROOT)}:{line}: {target}"
        for name, path in sorted(MODULES.items())
        for line, target in function_level_imports(path)
    ]
    assert found == []
    assert layering_problems(functions=True) == []


# The checks themselves, on hand-made modules: each must catch its case.
def write_modules(tmp_path, sources: dict[str, str]) -> dict[str, str]:
    modules = {}
    for name, source in sources.items():
        path = tmp_path / (name.replace(".", "_") + ".py")
        path.write_text(source)
        modules[name] = str(path)
    return modules


def test_cycle_check_catches_a_cycle_through_a_package(tmp_path):
    modules = write_modules(tmp_path, {
        "hisac_tf.compressors": "from hisac_tf.compressors.a import A\n",
        "hisac_tf.compressors.a": "from hisac_tf.models.b import B\n",
        "hisac_tf.models.b": "from hisac_tf.compressors import A\n",
        "hisac_tf.data.c": "import hisac_tf.compressors\n",
    })
    assert cycles(import_graph(modules)) == [[
        "hisac_tf.compressors", "hisac_tf.compressors.a",
        "hisac_tf.models.b"]]


def test_cycle_check_ignores_imports_inside_functions(tmp_path):
    modules = write_modules(tmp_path, {
        "pipelines.a": "import pipelines.b\n",
        "pipelines.b": "def f():\n    import pipelines.a\n",
    })
    assert cycles(import_graph(modules)) == []
    assert function_level_imports(modules["pipelines.b"]) == [
        (2, "pipelines.a")]


@pytest.mark.parametrize("name, source, culprit", [
    pytest.param("hisac_tf.data.x", "from hisac_tf.models import build\n",
                 "hisac_tf.models", id="data-imports-models"),
    pytest.param("hisac_tf.export.x", "import hisac_tf.experiments.plan\n",
                 "hisac_tf.experiments", id="export-imports-experiments"),
    pytest.param("hisac_tf.layers.x",
                 "def f():\n    from hisac_tf.compressors import y\n",
                 "hisac_tf.compressors", id="in-function"),
    pytest.param("serving.x", "try:\n    import pipelines.cli\n"
                 "except ImportError:\n    pass\n", "pipelines.cli",
                 id="serving-imports-pipelines-in-try"),
])
def test_layering_check_catches(tmp_path, name, source, culprit):
    modules = write_modules(tmp_path, {name: source})
    problems = layering_problems(modules, functions=True)
    assert problems and all(culprit in p for p in problems), problems
    at_module_level = "def " not in source
    assert bool(layering_problems(modules)) == at_module_level


# --------------------------------------------------- fresh interpreters
def import_in_fresh_interpreter(names: list[str]):
    script = (
        "import importlib, sys, traceback\n"
        "bad = 0\n"
        f"for name in {names!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except BaseException:\n"
        "        bad += 1\n"
        "        print('FAILED', name, traceback.format_exc())\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=600)


def test_every_module_imports_in_one_fresh_interpreter():
    result = import_in_fresh_interpreter(sorted(MODULES))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


# Each module imported first, all in one interpreter: the project's modules
# (and Keras' registry of serialisable classes) are dropped before each
# import, so every module meets the others uninitialised, as it would
# imported first in a fresh interpreter, while TensorFlow and the other
# libraries load once (one interpreter per module took ~3 s each).
FIRST_SCRIPT = """
import importlib, sys, traceback
sys.path.insert(0, {root!r})
names, packages = {names!r}, {packages!r}
for name in names:
    try:
        importlib.import_module(name)  # Third-party libraries load once.
    except BaseException:
        pass
from tf_keras.src.saving import object_registration
bad = 0
for name in names:
    for loaded in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[loaded]
    object_registration._GLOBAL_CUSTOM_OBJECTS.clear()
    object_registration._GLOBAL_CUSTOM_NAMES.clear()
    try:
        importlib.import_module(name)
    except BaseException:
        bad += 1
        print("FAILED", name, traceback.format_exc())
sys.exit(1 if bad else 0)
"""


def import_each_first(names: list[str], root: str = ROOT):
    packages = sorted({n.split(".")[0] for n in names})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    script = FIRST_SCRIPT.format(root=root, names=names, packages=packages)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env,
        capture_output=True, text=True, timeout=600)


def test_each_module_imports_first():
    # Imported first, a module meets any cycle through it half-initialised.
    result = import_each_first(sorted(MODULES))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


def test_import_each_first_catches_a_cycle(tmp_path):
    pkg = tmp_path / "cyclic_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclic_pkg import b\nVALUE = 1\n")
    (pkg / "b.py").write_text("from cyclic_pkg.a import VALUE\n")
    # b first: a loads whole before b reads VALUE; a first: b meets a
    # half-initialised (VALUE not yet defined).
    result = import_each_first(["cyclic_pkg.b", "cyclic_pkg.a"],
                               root=str(tmp_path))
    assert result.returncode == 1
    assert "FAILED cyclic_pkg.a" in result.stdout
    assert "FAILED cyclic_pkg.b" not in result.stdout


def test_fresh_interpreter_reports_a_broken_module():
    result = import_in_fresh_interpreter(["hisac_tf.no_such_module"])
    assert result.returncode == 1
    assert "FAILED hisac_tf.no_such_module" in result.stdout
