"""Layering: imports among the project's modules point down the layers and never form a circle.

The layers (docs/architecture.md, "Layers"), lowest first:
  0 foundation  videopoet (infra/): config, commands, assets, tracking, checkpoints, the training
                framework (videopoet.training) and the data-job engines (videopoet.jobs)
  1 formats     videopoet.pipeline: sources, media, conditions, shards, manifest, vocabulary, layouts
  2 models      videopoet.tokenizers, videopoet.trainer (the LM, its data, sampling), videopoet.eval
  3 jobs        the modules that run a command: ingest, tokenize, make-samples, tokenizer and LM
                training, sample
  4 entry       the `videopoet` command and the demo
A module may import from its own layer or below; within a layer the graph has no cycles.
Argument-spec modules (`*_cli`, `cli`) sit in the layer of their package but may import only the
foundation, so that `videopoet --help` builds without importing torch.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"infra": "videopoet", "pipeline": "videopoet.pipeline", "tokenizers": "videopoet.tokenizers",
         "trainer": "videopoet.trainer", "eval": "videopoet.eval"}

# Longest matching prefix wins.
LAYERS = {
    "videopoet": 0,
    "videopoet.pipeline": 1,
    "videopoet.tokenizers": 2,
    "videopoet.trainer": 2,
    "videopoet.eval": 2,
    "videopoet.pipeline.ingest": 3,
    "videopoet.pipeline.tokenize": 3,
    "videopoet.pipeline.samples": 3,
    "videopoet.tokenizers.train_video": 3,
    "videopoet.tokenizers.train_audio": 3,
    "videopoet.trainer.train": 3,
    "videopoet.trainer.engine": 3,
    "videopoet.trainer.sample": 3,
    "videopoet.trainer.sr.train": 3,
    "videopoet.trainer.sr.super_resolve": 3,
    "videopoet.eval.tokenizer_eval": 3,
    "videopoet.eval.eval_job": 3,
    "videopoet.eval.eval_score": 3,
    "videopoet.cli": 4,
    "videopoet.demo": 4,
}
LAYER_NAMES = ("foundation", "formats", "models", "jobs", "entry")


def layer_of(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".") or module.startswith(p + "_")),
               key=len)
    return LAYERS[best]


def is_spec(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return module != "videopoet.cli" and (last == "cli" or last.endswith("_cli"))


def project_modules(repo: Path = REPO) -> dict[str, Path]:
    modules = {}
    for folder, package in ROOTS.items():
        for path in (repo / folder).rglob("*.py"):
            rel = path.relative_to(repo / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            modules[".".join((package, *parts))] = path
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (at any depth in the file, relative imports resolved)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                # A package's own __init__ is not a dependency of its submodules' layering.
                if name and name != module and not module.startswith(name + "."):
                    graph[module].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, imports in sorted(graph.items()):
        for target in sorted(imports):
            if layer_of(target) > layer_of(module):
                bad.append(f"{module} ({LAYER_NAMES[layer_of(module)]}) imports {target} "
                           f"({LAYER_NAMES[layer_of(target)]})")
            elif is_spec(module) and layer_of(target) > 0 and not target.endswith("_config"):
                bad.append(f"argument spec {module} imports {target} (only the foundation and *_config modules)")
    return bad


def test_no_import_cycles():
    assert cycles(import_graph(project_modules())) == []


def test_imports_point_down_the_layers():
    assert violations(import_graph(project_modules())) == []


def test_the_check_catches_an_upward_import_and_a_cycle(tmp_path):
    """The same check on a copy of the tree with one upward import added must fail."""
    modules = project_modules()
    graph = import_graph(modules)
    graph["videopoet.config"].add("videopoet.trainer.model")  # foundation -> models: upward
    assert any(v.startswith("videopoet.config (foundation) imports videopoet.trainer.model") for v in violations(graph))
    graph["videopoet.trainer.model"].add("videopoet.config")
    assert ["videopoet.config", "videopoet.trainer.model"] in cycles(graph)


def test_every_module_has_a_layer_and_a_first_line():
    for module, path in project_modules().items():
        assert layer_of(module) in range(len(LAYER_NAMES))
        text = path.read_text()
        if text.strip():
            doc = ast.get_docstring(ast.parse(text))
            assert doc and doc.strip(), f"{path.relative_to(REPO)}: no docstring stating the file's job"


def test_help_builds_without_heavy_imports():
    code = ("import sys, videopoet.cli; videopoet.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'ray', 'apache_beam', 'deepspeed', 'mlflow', 'av', 'cv2') "
            "if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
