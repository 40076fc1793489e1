"""The shape of the code: imports go one way (dog_init <- analysis <- train, and inside analysis core <- kernels <-
classify / fit <- report <- __main__), with no circle even through imports inside functions; train takes analysis
only through the names ``analysis`` exports; no module imports another module's underscore names; files stay
small."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dog_init", "analysis", "train")
MAX_LINES = 420   # "about 400"


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file, inside functions too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names = [alias.name for alias in node.names]
            # ``from pkg import sub`` imports the module pkg.sub
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
            out += [(sub, [], node.lineno) for sub in subs]
            out.append((module, [n for n in names if f"{module}.{n}" not in MODULES], node.lineno))
    return out


def _internal(target: str) -> str | None:
    """The project module ``target`` names (a module, or a name inside one), or None for outside code."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


GRAPH = {name: {(_internal(t), tuple(names), line) for t, names, line in _imports(name, path) if _internal(t)}
         for name, path in MODULES.items()}


def test_no_import_circle_counting_imports_inside_functions():
    edges = {name: {t for t, _, _ in targets if t != name} for name, targets in GRAPH.items()}
    state: dict[str, int] = {}
    circles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2
    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


_LAYER = {"dog_init": 0, "analysis": 1, "train": 2}
_ANALYSIS = {"core": 0, "kernels": 1, "classify": 2, "fit": 2, "report": 3, "__main__": 4}


def _analysis_part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "analysis" else None


def test_imports_go_one_way():
    wrong = []
    for name, targets in GRAPH.items():
        for target, _, line in targets:
            here, there = name.split(".")[0], target.split(".")[0]
            if _LAYER[there] > _LAYER[here]:
                wrong.append(f"{name}:{line} imports {target} (a higher layer)")
            if here == there == "analysis":
                a, b = _analysis_part(name), _analysis_part(target)
                if a and b and a != b and _ANALYSIS[b] >= _ANALYSIS[a]:
                    wrong.append(f"{name}:{line} imports {target} (analysis.{a} may import only lower parts)")
                if a and target == "analysis":
                    wrong.append(f"{name}:{line} imports the analysis package itself (a circle through __init__)")
    assert not wrong, "\n".join(wrong)


def test_train_takes_analysis_through_its_exports():
    import analysis
    wrong = []
    for name, targets in GRAPH.items():
        if not name.startswith("train"):
            continue
        for target, names, line in targets:
            if target.startswith("analysis") and (target != "analysis" or set(names) - set(analysis.__all__)):
                wrong.append(f"{name}:{line} imports {target} {list(names)}")
    assert not wrong, "train must import analysis's public names only: " + "; ".join(wrong)


def test_no_module_imports_another_modules_underscore_names():
    wrong = [f"{name}:{line} imports {[n for n in names if n.startswith('_')]} from {target}"
             for name, targets in GRAPH.items() for target, names, line in targets
             if target != name and any(n.startswith("_") and not n.startswith("__") for n in names)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", sorted(MODULES.values()), ids=lambda p: str(p.relative_to(ROOT)))
def test_files_stay_small(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES
