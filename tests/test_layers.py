"""The shape of the code: imports go one way (dog_init <- analysis <- train, and inside analysis core <- kernels <-
classify / fit <- report <- __main__), with no circle even through imports inside functions; train takes analysis
only through the names ``analysis`` exports; no module imports another module's underscore names; files stay
small (test files too). The layers install and import apart: ``dog_init`` with torch alone, ``analysis`` without
the trainer's packages, and pyproject.toml's extras say so."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dog_init", "analysis", "train")
MAX_LINES = 420   # "about 400"
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "COLUMNS": "200", "PYTHONWARNINGS": "ignore"}


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


def test_test_files_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / "tests").rglob("*.py"))
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"test files over {MAX_LINES} lines (split them by subject): {big}"


# --- the layers import apart -----------------------------------------------------------------------------------

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = set({blocked!r})
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not in this layer's packages)",
                                          name=name)
            return None
    sys.meta_path.insert(0, Blocker())
    for name in list(sys.modules):
        if name.partition(".")[0] in BLOCKED:
            del sys.modules[name]
""")

IMPORT_ALL = textwrap.dedent("""
    import importlib, pkgutil
    def import_all(package):
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, package + "."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
""")

TRAIN_ONLY = ["accelerate", "tensorboard", "yaml", "ffcv", "train"]
ANALYSIS_ONLY = ["numpy", "scipy", "sklearn", "matplotlib", "safetensors", "tqdm", "timm", "torchvision", "PIL",
                 "huggingface_hub", "analysis"]


def run_blocked(blocked: list[str], code: str) -> subprocess.CompletedProcess:
    script = BLOCKER.format(blocked=sorted(blocked)) + IMPORT_ALL + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=600)


def test_dog_init_needs_only_torch():
    done = run_blocked(TRAIN_ONLY + ANALYSIS_ONLY, """
        import torch
        from torch import nn
        import dog_init
        model = nn.Sequential(nn.Conv2d(8, 8, 7, padding=3, groups=8), nn.Conv2d(8, 16, 1))
        report = dog_init.dog_init_(model, seed=0)
        assert len(report.layers) == 1 and len(report.skipped) == 1, report.summary()
        converted = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2, groups=8))
        dog_init.convert_(converted, "paper", seed=0)
        out = dog_init.bake_(converted)(torch.randn(1, 8, 9, 9))
        assert out.shape == (1, 8, 9, 9)
        import_all("dog_init")
        print("ok")
    """)
    assert done.returncode == 0 and "ok" in done.stdout, (
        "dog_init must import and work with torch alone (no numpy, analysis or train packages):\n" + done.stderr[-3000:])


def test_analysis_needs_no_trainer_packages():
    done = run_blocked(TRAIN_ONLY, """
        import torch
        from analysis import KernelClassifier
        result = KernelClassifier.pretrained(7).classify(torch.randn(16, 7, 7))
        assert abs(sum(result.proportions().values()) - 1) < 1e-6
        import_all("analysis")
        import analysis.__main__
        print("ok")
    """)
    assert done.returncode == 0 and "ok" in done.stdout, (
        "analysis must import and work without the trainer's packages (accelerate, tensorboard, yaml, train):\n"
        + done.stderr[-3000:])


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_extras_follow_the_layers():
    try:
        import tomllib
    except ModuleNotFoundError:           # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {name: _names(reqs) for name, reqs in project["optional-dependencies"].items()}
    assert _names(project["dependencies"]) == {"torch"}, "pip install dog-init must pull torch only"
    assert {"analysis", "train", "all", "ffcv", "dev"} <= set(extras)
    assert {"numpy", "scipy", "scikit-learn", "matplotlib", "safetensors"} <= extras["analysis"]
    assert not extras["analysis"] & {"accelerate", "tensorboard", "pyyaml"}, "the trainer's packages are train's"
    assert extras["analysis"] | {"accelerate", "tensorboard", "pyyaml", "torchvision"} <= extras["train"]
    assert extras["analysis"] | extras["train"] <= extras["all"]
    bounds = [r for reqs in [project["dependencies"], *project["optional-dependencies"].values()] for r in reqs]
    assert not [r for r in bounds if "<" in r or "==" in r], "lower bounds only, no upper caps or pins"
    assert "'.[all,dev]'" in (ROOT / "Makefile").read_text(), "make install installs every layer"
