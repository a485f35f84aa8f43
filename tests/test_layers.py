"""ferjax's import graph: no circles, and no module imports a higher layer.

Layers, lowest first (a module may import its own package and lower layers):
errors, config_args, peaks; paths, configs, stop_signals, workdir_lock; cli, data,
models, metrics, reporting, sharding, model_inputs, checkpointing, distributed;
summaries; objectives, evaluators, optim, convert, mix, ema, inference;
run_config; evaluate; train; scaling; main, bench, folds, predict, export, aot
(entry points).
"""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAYERS = (
    ("errors", "config_args", "peaks"),
    ("paths", "configs", "stop_signals", "workdir_lock"),
    ("cli", "data", "models", "metrics", "reporting", "sharding", "model_inputs",
     "checkpointing", "distributed"),
    ("summaries",),
    ("objectives", "evaluators", "optim", "convert", "mix", "ema", "inference"),
    ("run_config",),
    ("evaluate",),
    ("train",),
    ("scaling",),
    ("main", "bench", "folds", "predict", "export", "aot"),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _modules() -> dict[str, str]:
  """ferjax module name -> file path."""
  found = {}
  for root, _, files in os.walk(os.path.join(REPO, "ferjax")):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        found[".".join(parts)] = path
  return found


def _imports(path: str, modules: dict[str, str]) -> set[str]:
  """The ferjax modules `path` imports (anywhere in the file, lazy imports included)."""
  imported = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
    else:
      continue
    for name in names:
      if name in modules:
        imported.add(name)
  # `from ferjax.x import y` names both ferjax.x and ferjax.x.y; keep the deepest.
  return {name for name in imported
          if not any(other.startswith(name + ".") for other in imported)}


def _unit(module: str) -> str:
  return module.split(".")[1] if module.count(".") else module


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(path, modules) for name, path in modules.items()}


def test_layers_parse_every_module():
  units = {_unit(name) for name in _graph() if name != "ferjax"}
  assert units <= set(RANK), f"modules without a layer: {sorted(units - set(RANK))}"


def test_no_module_imports_a_higher_layer():
  wrong = [f"{name} -> {target}" for name, targets in _graph().items() if name != "ferjax"
           for target in targets
           if _unit(target) != _unit(name) and RANK[_unit(target)] >= RANK[_unit(name)]]
  assert not wrong, wrong


def test_no_import_circles():
  graph = _graph()
  state = {}

  def visit(node, stack):
    state[node] = "open"
    for target in graph.get(node, ()):
      if state.get(target) == "open":
        raise AssertionError("import circle: " + " -> ".join(stack[stack.index(target):]
                                                            + [target]))
      if target not in state:
        visit(target, stack + [target])
    state[node] = "done"

  for node in graph:
    if node not in state:
      visit(node, [node])
