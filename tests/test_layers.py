"""The package reads top to bottom. Every module belongs to a layer of LAYERS and imports only from its
own layer and those below; no import cycle; no function-local import of aptune's own modules (a cycle
hidden that way is still a cycle); function-local imports only of the optional or slow packages of LAZY.
Checked twice: from the source (every import statement, at module scope or not), and by importing the
layers bottom-up in a fresh interpreter, where a module of a higher layer must not have been loaded yet.
"""
import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import aptune

PKG = Path(aptune.__file__).parent
FACE = "aptune"        # the package itself: the public API (api.py), imported by nothing inside aptune

LAYERS = [             # bottom first; a module belongs to the entry that names it or its package
    ["aptune.errors", "aptune.version", "aptune.normalization", "aptune.console", "aptune.io", "aptune.stats",
     "aptune.hub", "aptune.model_card", "aptune.adapter_files"],
    ["aptune.models"],             # layers, backbone contract, family registry, families, checkpoint reader
    ["aptune.methods"],
    ["aptune.factory", "aptune.adapters"],
    ["aptune.multitask"],
    ["aptune.data"],
    ["aptune.config"],
    ["aptune.engine"],
    ["aptune.profiling", "aptune.export", "aptune.pretrain", "aptune.prediction", "aptune.serve",
     "aptune.workflows", "aptune.demo", "aptune.demo_report", "aptune.reproduce", "aptune.reproduce_report"],
    ["aptune.api", FACE],
    ["aptune.commands"],
    ["aptune.cli", "aptune.__main__"],
]
# what a module may not import although the layer order allows it: the data pipeline needs no model
NEVER = {"aptune.data": ("aptune.models", "aptune.methods", "aptune.factory", "aptune.adapters", "aptune.multitask")}
# imported inside the function that needs them (each with its reason there): optional, slow to import, or
# not on every platform
LAZY = ("matplotlib", "transformers", "onnx", "onnxruntime", "onnxscript", "fastapi", "uvicorn", "wandb", "mlflow",
        "torch.utils.tensorboard", "timm", "huggingface_hub", "resource")
LOCAL_OK = {("aptune.serve", "aptune.serve.app")}    # app.py is the FastAPI module: imported with FastAPI


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer_of(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        for entry in layer:
            if name == entry or (entry != FACE and name.startswith(entry + ".")):
                return i
    raise AssertionError(f"{name} is in no layer of tests/test_layers.py: place it")


def imports(name: str) -> list[tuple[str, int, bool]]:
    """(imported name, line, inside a function) for every import statement of module `name`; aptune's
    own modules resolved to the module (or package) imported."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    local = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(fn)}
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = here.split(".")[:len(here.split(".")) - node.level + 1]
                base = ".".join(pkg + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        out += [(t, node.lineno, id(node) in local) for t in targets]
    return out


def test_every_module_imports_only_its_layer_and_below():
    up, never = [], []
    for name in MODULES:
        for target, line, _ in imports(name):
            if target.split(".")[0] != "aptune":
                continue
            if layer_of(target) > layer_of(name):
                up.append(f"{MODULES[name]}:{line} imports {target}")
            for prefix, banned in NEVER.items():
                if name.startswith(prefix) and target.startswith(banned):
                    never.append(f"{MODULES[name]}:{line} imports {target}")
    assert up == [] and never == []


def test_no_import_cycle():
    graph = defaultdict(set)
    for name in MODULES:
        graph[name] |= {t for t, _, _ in imports(name) if t in MODULES and t != name}
    done, path, cycles = set(), [], []

    def visit(v):
        if v in path:
            cycles.append(path[path.index(v):] + [v])
            return
        if v in done:
            return
        path.append(v)
        for w in sorted(graph[v]):
            visit(w)
        path.pop()
        done.add(v)

    for v in sorted(MODULES):
        visit(v)
    assert cycles == []


def test_function_local_imports_are_only_of_optional_or_slow_packages():
    bad = [f"{MODULES[name]}:{line} imports {target} inside a function"
           for name in MODULES for target, line, local in imports(name)
           if local and (target.split(".")[0] == "aptune" and (name, target) not in LOCAL_OK
                         or target.split(".")[0] != "aptune" and not target.startswith(LAZY))]
    assert bad == []


BOTTOM_UP = """
import importlib, json, sys, types
face = types.ModuleType("aptune")         # the package without its __init__ (the public face, a top layer)
face.__path__ = [sys.argv[1]]
sys.modules["aptune"] = face
layers, out = json.loads(sys.argv[2]), []
for i, names in enumerate(layers):
    for name in names:
        importlib.import_module(name)
    loaded = sorted(m for m in sys.modules if m.startswith("aptune."))
    out.append({"loaded": loaded, "others": sorted(m for m in sys.modules if not m.startswith("aptune"))})
print(json.dumps(out))
"""


def test_importing_the_layers_bottom_up_loads_nothing_above():
    """Each layer's modules imported in order in one fresh interpreter (the package face skipped): after
    layer i, no module of a higher layer is loaded, the model loads no PyAV, and no layer loads any
    optional or slow package of LAZY."""
    last = layer_of("aptune.workflows")
    lazy = {module for _, module in LOCAL_OK}          # loaded only by the function that needs it
    names = [[n for n in MODULES if n != FACE and n not in lazy and layer_of(n) == i] for i in range(last + 1)]
    run = subprocess.run([sys.executable, "-c", BOTTOM_UP, str(PKG), json.dumps(names)], capture_output=True,
                         text=True, check=True)
    after = json.loads(run.stdout)
    for i, state in enumerate(after):
        above = [m for m in state["loaded"] if m in MODULES and layer_of(m) > i]
        assert above == [], f"importing layer {i} ({LAYERS[i][0]}, ...) loaded {above}"
    models = layer_of("aptune.models")
    assert "av" not in after[models]["others"] and not any(m.startswith("aptune.data") for m in after[models]["loaded"])
    assert "av" in after[layer_of("aptune.data")]["others"]          # the check above can fail
    assert [m for m in after[-1]["others"] if m.startswith(LAZY)] == []
