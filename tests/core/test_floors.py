"""The floors of the house show in its folders: each import-linter layer is a folder, no module imports
itself round a circle, and README's Layout names the folders that exist.

The import graph is read from the source with ``ast`` (every import, at the top or inside a function,
since a lazy import still closes a circle when it runs), mapping folders to packages as pyproject does.
"""

from __future__ import annotations

import ast
import configparser
import re
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[2]

# Each layer of .importlinter, top to bottom, and the folders that hold it. The front door is the modules
# of edgeseg/ itself (each part's folder is a package of its own, so edgeseg/ holds nothing else).
FLOORS = [
    ("front door", ["edgeseg/"]),
    ("export | evaluate", ["export/", "evaluate/"]),
    ("loading", ["loading/"]),
    ("train | runtime", ["train/", "runtime/"]),
    ("core", ["core/", "models/"]),
]


def package_dirs(root: Path = REPO_ROOT) -> dict[str, str]:
    """Package name -> folder, as pyproject's [tool.setuptools] package-dir maps them."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["setuptools"]["package-dir"]


def importlinter_layers(root: Path = REPO_ROOT) -> list[list[str]]:
    parser = configparser.ConfigParser()
    parser.read(root / ".importlinter", encoding="utf-8")
    lines = parser["importlinter:contract:layers"]["layers"].strip().splitlines()
    return [[name.strip() for name in re.split(r"[|:]", line)] for line in lines]


def layer_folders(layer: list[str], packages: dict[str, str]) -> list[str]:
    """The folders a layer's modules live in: a part's folder, or edgeseg/ for a front-door module."""
    folders = []
    for name in layer:
        package = f"edgeseg.{name}"
        folder = packages[package] + "/" if package in packages else "edgeseg/"
        if folder not in folders:
            folders.append(folder)
    return folders


def test_each_layer_is_a_folder():
    packages = package_dirs()
    layers = importlinter_layers()
    assert [layer_folders(layer, packages) for layer in layers] == [folders for _, folders in FLOORS]
    front_door = {f"{name}.py" for name in layers[0]}
    in_edgeseg = {path.name for path in (REPO_ROOT / "edgeseg").glob("*.py")} - {"__init__.py"}
    assert in_edgeseg == front_door, "edgeseg/ holds the front door only; a core module belongs in core/"


def source_modules(root: Path, packages: dict[str, str]) -> dict[str, Path]:
    """Module name -> file, for every module of every mapped package."""
    modules = {}
    for package, folder in packages.items():
        for path in sorted((root / folder).glob("*.py")):
            name = package if path.name == "__init__.py" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


def runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:``: an import for the type checker never runs."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            yield from (inner for branch in node.orelse for inner in [branch, *runtime_nodes(branch)])
            continue
        yield node
        yield from runtime_nodes(node)


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's own modules that ``name`` imports (``from pkg import module`` counts as the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            targets = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules] or [base]
        else:
            continue
        found |= {target for target in targets if target in modules and target != name}
    return found


def import_circles(root: Path = REPO_ROOT) -> list[list[str]]:
    """Groups of modules that import each other round a circle (strongly connected, Tarjan's algorithm)."""
    modules = source_modules(root, package_dirs(root))
    graph = {name: sorted(imported_modules(name, path, modules)) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for name in graph:
        if name not in index:
            visit(name)
    return circles


def test_no_import_circle_in_the_package():
    assert import_circles() == []


def test_the_circle_check_sees_a_circle(tmp_path: Path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pyproject.toml").write_text('[tool.setuptools]\npackage-dir = {"edgeseg.pkg" = "pkg"}\n')
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("def later():\n    from edgeseg.pkg.b import thing\n")
    (tmp_path / "pkg" / "b.py").write_text("from . import a\nthing = 1\n")
    (tmp_path / "pkg" / "c.py").write_text("from edgeseg.pkg import a\n")
    assert import_circles(tmp_path) == [["edgeseg.pkg.a", "edgeseg.pkg.b"]]


def readme_layout_folders() -> list[str]:
    """The folders README's Layout section lists, one per line, each line starting with the folder."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^ {4}(\S+/)", section, flags=re.MULTILINE)


def tracked_top_folders() -> set[str]:
    """The top-level folders git tracks files in (hidden ones, like .ci/, aside)."""
    listing = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return {line.split("/")[0] + "/" for line in listing.splitlines() if "/" in line and not line.startswith(".")}


def test_readme_layout_names_the_folders_that_exist():
    listed = readme_layout_folders()
    assert len(listed) == len(set(listed))
    expected = tracked_top_folders() if (REPO_ROOT / ".git").exists() else {f + "/" for f in package_dirs().values()}
    missing = expected - set(listed)
    assert not missing, f"README's Layout lacks {sorted(missing)}"
    for folder in listed:
        assert (REPO_ROOT / folder).is_dir(), f"README's Layout names {folder}, which does not exist"
