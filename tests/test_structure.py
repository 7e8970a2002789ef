"""Structure of ``src/iqpfr``: no import circles, and lower layers never import higher ones.

The import graph is read from the source by AST, not by importing: every ``import`` /
``from ... import`` statement counts, wherever it stands (module level, inside a function or a
``try``: a lazy import is still a dependency), relative imports are resolved, ``from pkg import
name`` is an edge to the submodule ``pkg.name`` when there is one (else to ``pkg``), and
``importlib.import_module("iqpfr....")`` with a literal name counts too. Class paths kept as data
(``"module:Class"`` tables such as ``iqpfr.models.factory.PRESETS``, the lazy-attribute tables of
``iqpfr`` and ``iqpfr.quality``) are plug-in registries resolved at call time and are not edges.

Layers enforced (lowest first; a module may import its own layer and the ones below, never above):

    0  iqpfr (the lazy root), iqpfr.utils, iqpfr.config, iqpfr.io     foundations
    1  iqpfr.models                                                   pure nn.Module networks
    2  iqpfr.weights, iqpfr.kernels, iqpfr.export                     files, zoo, compiled ops, ONNX
    3  iqpfr.quality, iqpfr.data, iqpfr.face, iqpfr.upsample, iqpfr.inference
    4  iqpfr.video
    5  iqpfr.restorer
    6  iqpfr.train, iqpfr.eval, iqpfr.integrations
    7  iqpfr.tasks
    8  iqpfr.demo, iqpfr.cli, iqpfr.__main__                          front-ends

so, in particular, ``iqpfr.models.*`` imports nothing from weights / train / cli / eval / face /
video / demo / integrations / tasks. Within a layer any direction is allowed; circles are caught
by the strongly-connected-component check.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "iqpfr"

LAYERS: list[tuple[str, ...]] = [
    ("iqpfr", "iqpfr.utils", "iqpfr.config", "iqpfr.io"),
    ("iqpfr.models",),
    ("iqpfr.weights", "iqpfr.kernels", "iqpfr.export"),
    ("iqpfr.quality", "iqpfr.data", "iqpfr.face", "iqpfr.upsample", "iqpfr.inference"),
    ("iqpfr.video",),
    ("iqpfr.restorer",),
    ("iqpfr.train", "iqpfr.eval", "iqpfr.integrations"),
    ("iqpfr.tasks",),
    ("iqpfr.demo", "iqpfr.cli", "iqpfr.__main__"),
]


# ------------------------------------------------------------------------------------ the graph
def package_modules(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every ``.py`` under ``src/package``."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_pkg)
    return modules


def _literal_import_module(node: ast.Call) -> str | None:
    """The name of ``importlib.import_module("literal")`` / ``import_module("literal")``, else None."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name != "import_module" or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package modules it imports (see the module docstring for what counts)."""
    modules = package_modules(src, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}

    def add(source: str, target: str) -> None:
        # `import a.b.c` names a.b.c; the longest prefix that is one of our modules is the edge
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != source:
            graph[source].add(target)

    for name, (path, is_pkg) in modules.items():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as exc:
            raise AssertionError(f"{path}: {exc}") from None
        here = name if is_pkg else name.rpartition(".")[0]  # the package relative imports start from
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(name, alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    if node.level - 1 > len(base) - 1:
                        raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top package")
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    add(name, sub if sub in modules else target)
            elif isinstance(node, ast.Call):
                literal = _literal_import_module(node)
                if literal is not None:
                    add(name, literal)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Components of more than one module (Tarjan, iterative), each sorted, the list sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return sorted(found)


def describe_cycle(graph: dict[str, set[str]], component: list[str]) -> str:
    """One readable circle through the component's first module, plus the edges inside it."""
    members = set(component)
    start = component[0]
    # shortest path back to start (BFS), so the message shows a concrete circle
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier and start not in previous:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child not in previous:
                    previous[child] = node
                    nxt.append(child)
        frontier = nxt
    path = [start]
    node = previous[start]
    while node != start:
        path.append(node)
        node = previous[node]
    path.append(start)
    circle = " -> ".join(reversed(path))
    edges = "; ".join(f"{m} -> {', '.join(sorted(graph[m] & members))}" for m in component)
    return f"{circle}   [edges: {edges}]"


def layer_of(module: str) -> int:
    best, depth = None, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = i, prefix.count(".")
    assert best is not None, f"{module} is in no layer: add its package to LAYERS in {__file__}"
    return best


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for source in sorted(graph):
        for target in sorted(graph[source]):
            if layer_of(target) > layer_of(source):
                out.append(f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})")
    return out


# ------------------------------------------------------------------------------------ the checks
@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(SRC, PACKAGE)


def test_no_import_circles(graph):
    cycles = strongly_connected(graph)
    assert not cycles, "import circles in src/iqpfr:\n" + "\n".join(describe_cycle(graph, c) for c in cycles)


def test_layers(graph):
    bad = layer_violations(graph)
    assert not bad, "lower layers import higher ones:\n" + "\n".join(bad)


def test_models_are_pure_networks(graph):
    """The brief's rule in its own words (also implied by LAYERS): models import no higher layer."""
    forbidden = ("weights", "train", "cli", "eval", "face", "video", "demo", "integrations", "tasks",
                 "quality", "data", "restorer", "inference", "export", "kernels", "upsample")
    bad = sorted(f"{m} -> {t}" for m in graph if m.startswith("iqpfr.models") for t in graph[m]
                 if t.split(".")[1] in forbidden)
    assert not bad, "iqpfr.models imports higher layers: " + ", ".join(bad)


def test_models_name_no_higher_layer_even_as_data():
    """Class-path tables in ``iqpfr.models`` ("module:Class" strings, resolved at call time) only
    name ``iqpfr.models`` itself: networks of higher layers register through the
    ``iqpfr.model_classes`` entry points instead (``iqpfr.models.factory.registered_classes``)."""
    bad = []
    for path in sorted((SRC / PACKAGE / "models").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
                module = node.value.split(":")[0].strip()
                if module.startswith("iqpfr.") and layer_of(module) > layer_of("iqpfr.models"):
                    bad.append(f"{path.relative_to(SRC)}: {node.value!r}")
    assert not bad, "iqpfr.models names higher layers: " + ", ".join(bad)


def test_registered_model_classes_are_networks_of_this_project():
    import importlib

    from torch import nn

    from iqpfr.models.factory import import_class, known_classes, registered_classes

    registered = registered_classes()
    assert "iqpfr.tasks.underwater.model:UnderwaterEnhanceNet" in registered  # pyproject's entry point
    for path in registered:
        assert path in known_classes()
        cls = import_class(path)
        assert isinstance(cls, type) and issubclass(cls, nn.Module)
        assert cls is getattr(importlib.import_module(path.split(":")[0]), path.split(":")[1])
    with pytest.raises(ValueError, match="unknown model class"):
        import_class("os:system")


# ------------------------------------------------------------------------------------ the checker itself
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_graph_finds_every_kind_of_edge(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "def f():\n    from . import c\n",                       # lazy + relative submodule
        "pkg/c.py": "from .sub.d import X\n",                                    # relative module
        "pkg/sub/__init__.py": "",
        "pkg/sub/d.py": "try:\n    from ..e import Y\nexcept ImportError:\n    pass\n",  # two levels up
        "pkg/e.py": "import importlib\nM = importlib.import_module('pkg.a')\n",  # literal import_module
        "pkg/lone.py": "import os\nfrom pkg import sub\nfrom pkg.sub import d as dd\nfrom typing import Any\n",
    })
    g = import_graph(tmp_path, "pkg")
    assert g["pkg.a"] == {"pkg.b"}
    assert g["pkg.b"] == {"pkg.c"}
    assert g["pkg.c"] == {"pkg.sub.d"}
    assert g["pkg.sub.d"] == {"pkg.e"}
    assert g["pkg.e"] == {"pkg.a"}
    assert g["pkg.lone"] == {"pkg.sub", "pkg.sub.d"}
    cycles = strongly_connected(g)
    assert cycles == [["pkg.a", "pkg.b", "pkg.c", "pkg.e", "pkg.sub.d"]]
    text = describe_cycle(g, cycles[0])
    assert text.startswith("pkg.a -> pkg.b -> pkg.c -> pkg.sub.d -> pkg.e -> pkg.a")


def test_graph_of_an_acyclic_package_has_no_cycles(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import f\n",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "import json\n",
    })
    g = import_graph(tmp_path, "pkg")
    assert g == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": set()}
    assert strongly_connected(g) == []


def test_checker_catches_a_circle_planted_in_a_copy_of_iqpfr(tmp_path):
    """The real tree with one lazy import added (the kind of circle this test exists for)."""
    import shutil

    shutil.copytree(SRC / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("*.safetensors", "*.npz"))
    target = tmp_path / PACKAGE / "models" / "quantizer.py"
    target.write_text(target.read_text() + "\n\ndef _planted():\n    from iqpfr.models import codeformer\n")
    g = import_graph(tmp_path, PACKAGE)
    cycles = strongly_connected(g)
    assert any({"iqpfr.models.quantizer", "iqpfr.models.codeformer"} <= set(c) for c in cycles), cycles
    # and a higher layer imported from models is a layer violation
    target.write_text(target.read_text() + "\n\ndef _planted2():\n    import iqpfr.weights.cache\n")
    assert any(v.startswith("iqpfr.models.quantizer (layer 1) imports iqpfr.weights.cache")
               for v in layer_violations(import_graph(tmp_path, PACKAGE)))


def test_layer_table_covers_every_package(graph):
    for module in graph:
        layer_of(module)  # asserts


if __name__ == "__main__":  # python tests/test_structure.py: print the circles and violations
    g = import_graph(SRC, PACKAGE)
    for c in strongly_connected(g):
        print("circle:", describe_cycle(g, c))
    for v in layer_violations(g):
        print("layer:", v)
    sys.exit(0)
