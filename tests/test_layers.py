"""The package's import graph: no circle, the core beneath everything, the tooling above the
library, and no function-local import that hides a dependency.

Read from the source (``ast``), so that an import inside a function counts as much as one at the
top. ``if TYPE_CHECKING:`` blocks are left out: they run only under a type checker.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torchstn

PACKAGE = Path(torchstn.__file__).parent

#: the geometry core: imports nothing of torchstn outside itself
CORE = (
    "torchstn.functional",
    "torchstn.fields",
    "torchstn.native",
    "torchstn.transforms",
    "torchstn.module",
    "torchstn.composite",
    "torchstn.localization",
    "torchstn.optim",
    "torchstn.errors",
    "torchstn._checks",
    "torchstn._version",
)
#: the repository's tooling shipped as commands: may import the library, never the reverse
TOOLING = (
    "torchstn.__main__",
    "torchstn.cli",
    "torchstn.experiments",
    "torchstn.bench",
    "torchstn.explain",
)
#: third-party modules that are optional extras (imported where used, so the package works
#: without them) or platform-only
OPTIONAL = (
    "matplotlib",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "nibabel",
    "msvcrt",
    "fcntl",
    "resource",
    "torch.distributed.run",
    "submitit",
)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported torchstn module, or the third-party module
    line: int
    local: bool  # inside a function
    commented: bool  # a comment on its line or the line above says why


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".")
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    found = []
    for alias in node.names:
        sub = f"{prefix}.{alias.name}"
        found.append(sub if sub in MODULES else prefix)
    return found


def _imports_of(module: str, path: Path) -> list[Import]:
    source = path.read_text()
    lines = source.splitlines()
    out: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                text = lines[child.lineno - 1]
                above = lines[child.lineno - 2].strip() if child.lineno > 1 else ""
                commented = "#" in text or above.startswith("#")
                for target in _targets(child, module, path.name == "__init__.py"):
                    out.append(Import(module, target, child.lineno, local, commented))
            func = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            visit(child, local or func)

    visit(ast.parse(source), False)
    return out


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports_of(module, path)]


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_no_import_circle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if imp.target in MODULES and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    assert circles == []


def test_the_core_imports_nothing_above_it():
    above = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in IMPORTS
        if _within(i.source, CORE)
        and i.target.startswith("torchstn")
        and i.target != "torchstn"
        and not _within(i.target, CORE)
    ]
    assert above == []


def test_the_library_does_not_import_the_tooling():
    upward = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in IMPORTS
        if not _within(i.source, TOOLING) and _within(i.target, TOOLING)
    ]
    assert upward == []


def test_function_local_imports_say_why():
    """A function-local import is for an optional extra, a platform module, a command loaded
    when it runs (``torchstn.cli``), or says why in a comment; any other hides a dependency."""
    hidden = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in IMPORTS
        if i.local
        and not i.commented
        and not _within(i.source, ("torchstn.cli",))
        and i.target.split(".")[0] not in sys.stdlib_module_names
        and not any(i.target == o or i.target.startswith(o + ".") for o in OPTIONAL)
    ]
    assert hidden == []


def test_every_module_imports_first():
    """Each module imports first, alone (a circle that works only from one entry point fails
    here): one interpreter, torchstn's modules forgotten before each."""
    code = (
        "import sys, importlib\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'torchstn']:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *sorted(MODULES)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
