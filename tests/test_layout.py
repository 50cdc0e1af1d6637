"""The layers run one way: every import between forkcode's top-level packages goes down this order
(a module may import its own package and any package below it, never one above), so there is no
import cycle between packages. Imports inside functions count too."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ["common", "judge", "lm", "datagen", "valuemodel", "engine", "bench"]


def _modules(package):
    for folder, dirs, files in os.walk(os.path.join(REPO, package)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def _imported_packages(path):
    """(line, top-level package) of every absolute import in the file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            yield node.lineno, node.module.split(".")[0]


def import_graph():
    """{package: {imported package: first "file:line" that imports it}} between forkcode packages."""
    graph = {p: {} for p in LAYERS}
    for package in LAYERS:
        for path in _modules(package):
            for line, other in _imported_packages(path):
                if other in graph and other != package:
                    graph[package].setdefault(other, f"{os.path.relpath(path, REPO)}:{line}")
    return graph


def test_every_import_goes_down_the_layers():
    graph = import_graph()
    upward = [f"{where}: {package} imports {other}, a layer above it"
              for package, imports in graph.items() for other, where in imports.items()
              if LAYERS.index(other) > LAYERS.index(package)]
    assert not upward, "\n".join(upward)
    print("\nlayers, bottom to top, each with the packages it imports:")
    for package in LAYERS:
        print(f"  {package:10s} <- {', '.join(sorted(graph[package], key=LAYERS.index)) or '(none)'}")


@pytest.mark.parametrize("package", LAYERS)
def test_every_package_says_what_it_is_for_and_what_it_may_import(package):
    doc = ast.get_docstring(ast.parse(open(os.path.join(REPO, package, "__init__.py"), encoding="utf-8").read()))
    assert doc and len(doc.split()) >= 15, f"{package}/__init__.py needs an opening docstring saying what it is for"
    below = LAYERS[:LAYERS.index(package)]
    assert all(p in doc for p in below) or "imports no other forkcode package" in doc, \
        f"{package}/__init__.py's docstring should name the layers it may import ({', '.join(below)})"


def test_the_sandbox_runner_imports_nothing_of_forkcode():
    """judge/_runner.py runs inside the sandbox, on the standard library alone."""
    path = os.path.join(REPO, "judge", "_runner.py")
    assert not [p for _, p in _imported_packages(path) if p in LAYERS]


def test_the_installed_packages_hold_no_tests_benchmarks_or_research():
    """setuptools installs the modules of the packages pyproject lists, not their subfolders: the
    benchmarks (bench/benchmarks/), the tests and research/ stay in the checkout."""
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        packages = tomllib.load(f)["tool"]["setuptools"]["packages"]
    assert sorted(packages) == sorted(LAYERS)
    shipped = [f"{p}/{name}" for p in packages for name in os.listdir(os.path.join(REPO, p))
               if name.endswith(".py") and (name.startswith("test_") or name == "conftest.py")]
    assert not shipped, f"tests or benchmarks inside an installed package: {shipped}"


def test_no_package_imports_the_research_tools():
    research = [f"{os.path.relpath(path, REPO)}:{line}" for package in LAYERS for path in _modules(package)
                for line, other in _imported_packages(path) if other == "research"]
    assert not research, research


def test_shipped_value_models_name_no_machine_path(tmp_path, monkeypatch):
    """The installed value models' configs and reports name their inputs relative to the repository
    (or by name and hash), never by a path of the machine that made them."""
    import re

    from common.store import portable_path
    machine_path = re.compile(r"(?<![\w.])/(root|home|tmp|work|Users|mnt|var)/")
    shipped = [os.path.join(folder, name) for folder, _, names in os.walk(os.path.join(REPO, "valuemodel"))
               for name in names if name.endswith((".json", ".md"))]
    assert shipped
    found = [f"{os.path.relpath(p, REPO)}: {m.group(0)}" for p in shipped
             for m in [machine_path.search(open(p, encoding="utf-8").read())] if m]
    assert not found, found
    outside = tmp_path / "train.jsonl"
    outside.write_text("{}\n")
    monkeypatch.chdir(REPO)
    assert portable_path(os.path.join(REPO, "examples", "two_sum_stdio.json")) == os.path.join("examples", "two_sum_stdio.json")
    assert re.fullmatch(r"train\.jsonl \(sha256 [0-9a-f]{16}\)", portable_path(str(outside)))
    assert not machine_path.search(portable_path(str(tmp_path)))


def test_no_import_circle_between_modules():
    """Within a package too, module imports (those inside functions included) form no circle:
    each module can be read after the ones it imports."""
    nx = pytest.importorskip("networkx")
    modules = {f"{p}.{os.path.splitext(os.path.relpath(path, os.path.join(REPO, p)))[0].replace(os.sep, '.')}"
               for p in LAYERS for path in _modules(p)}
    graph = nx.DiGraph()
    for package in LAYERS:
        for path in _modules(package):
            module = f"{package}.{os.path.splitext(os.path.relpath(path, os.path.join(REPO, package)))[0].replace(os.sep, '.')}"
            tree = ast.parse(open(path, encoding="utf-8").read(), path)
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for name in names:
                    target = name if name in modules else f"{name}.__init__" if f"{name}.__init__" in modules else None
                    if target and target != module:
                        graph.add_edge(module, target)
    circles = list(nx.simple_cycles(graph))
    assert not circles, circles
