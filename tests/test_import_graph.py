"""The project's modules import each other without a cycle, counting the imports placed inside functions (a cycle
dodged by a late import is still a cycle); imports for type checking only do not run and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("benchmarks", "convert_dataset", "datasets", "demo", "models", "segmentation", "tools", "training", "utils")


def module_files() -> dict[str, Path]:
    files = {path.stem: path for path in ROOT.glob("*.py")}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)):
            yield node
            yield from runtime_nodes(node)


def imported(name: str, path: Path, modules: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file, with the packages each import runs first."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets |= {f"{base}.{alias.name}" for alias in node.names} | {base}
    found = set()
    for target in targets:
        parts = target.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules
    return found - {name} - {p for p in found if name.startswith(p + ".")}  # a package runs before its modules


def test_no_import_cycles():
    files = module_files()
    graph = {name: imported(name, path, set(files)) for name, path in files.items()}
    state: dict[str, str] = {}  # 'open' while on the path, then 'done'

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            assert state.get(other) != "open", f"import cycle: {' -> '.join(path[path.index(other):] + [other])}"
            if other not in state:
                visit(other, [*path, other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
