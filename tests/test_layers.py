"""Imports point one way: leaf helpers < data, models, laws (independent) < train < study < report <
command modules (cli, __main__, */command.py). Fails on an import that goes up a layer, across the
three middle packages, or round a cycle (a package's __init__ and its submodules included).

Every import in a module counts, also one inside a function: an import deferred to break a cycle is
still the cycle.

And functions stay short: at most MAX_FUNCTION_LINES lines each (the config schema aside).
"""

import ast
import pathlib

import pytest

import jaxscale

ROOT = pathlib.Path(jaxscale.__file__).parent
LAYER = {"data": 1, "models": 1, "laws": 1, "train": 2, "study": 3, "report": 4}
COMMAND = 9
INDEPENDENT = ("data", "models", "laws")


def modules(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
  """Dotted module name -> file, for every module of the package (packages by their __init__)."""
  out = {}
  for path in root.rglob("*.py"):
    parts = ("jaxscale",) + path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def _targets(name: str, path: pathlib.Path, node: ast.AST, mods: dict) -> list[str]:
  """The jaxscale modules an import statement names (a `from pkg import sub` names pkg.sub)."""
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  else:
    base = name.split(".")
    if node.level:
      base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
    else:
      base = []
    stem = ".".join(base + ([node.module] if node.module else []))
    names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in mods else stem for a in node.names]
  out = []
  for t in names:
    while t and t not in mods:
      t = t.rpartition(".")[0]
    if t and t != name and t.startswith("jaxscale"):
      out.append(t)
  return out


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
  """module -> the jaxscale modules it imports (anywhere in its body)."""
  mods = modules(root)
  graph = {m: set() for m in mods}
  for name, path in mods.items():
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        graph[name].update(_targets(name, path, node, mods))
  return graph


def layer(module: str) -> int:
  parts = module.split(".")
  if parts[-1] in ("cli", "__main__") or parts[-1].endswith("command"):
    return COMMAND
  return LAYER.get(parts[1], 0) if len(parts) > 1 else 0


def _package(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
  """Edges that go up a layer, or between two of the independent middle packages."""
  bad = []
  for a, targets in graph.items():
    for b in targets:
      if layer(a) == COMMAND or a == "jaxscale" or b.startswith(a + "."):
        continue  # commands sit on top; a package may import its own submodules
      pa, pb = _package(a), _package(b)
      if layer(b) > layer(a) or (pa != pb and pa in INDEPENDENT and pb in INDEPENDENT):
        bad.append(f"{a} -> {b}")
  return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = n[0]
    n[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in list(graph):
    if v not in index:
      visit(v)
  return out


def test_no_import_cycles():
  assert cycles(import_graph()) == []


def test_imports_point_down_the_layers():
  assert wrong_way(import_graph()) == []


@pytest.mark.parametrize("files, needle", [
    ({"a/__init__.py": "from jaxscale.a import b\n", "a/b.py": "from jaxscale.a import f\n"}, "cycle"),
    ({"laws/x.py": "def f():\n  from jaxscale.report import y\n", "report/y.py": ""}, "jaxscale.laws.x -> jaxscale.report.y"),
    ({"data/x.py": "from jaxscale.models import y\n", "models/y.py": ""}, "jaxscale.data.x -> jaxscale.models.y"),
    ({"study/x.py": "from . import y\n", "study/y.py": "from jaxscale.study import x\n"}, "cycle"),
])
def test_the_checks_catch_bad_imports(tmp_path, files, needle):
  root = tmp_path / "jaxscale"
  for rel, text in {"__init__.py": "", **files}.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    for parent in (root / rel).parents:
      if parent == root.parent:
        break
      (parent / "__init__.py").touch()
    (root / rel).write_text(text)
  graph = import_graph(root)
  found = ["cycle " + " ".join(c) for c in cycles(graph)] + wrong_way(graph)
  assert any(needle in f for f in found), found


def test_commands_may_import_anything():
  graph = {"jaxscale.study.command": {"jaxscale.report.render", "jaxscale.study.analysis"},
           "jaxscale.cli": {"jaxscale.report.command"}}
  assert wrong_way(graph) == [] and cycles(graph) == []


# ----------------------------------------------------------------------------- function length

MAX_FUNCTION_LINES = 60
LONG_BY_DESIGN = {("jaxscale/config.py", "base_config")}   # the config schema: one field a line


def long_functions(root: pathlib.Path) -> list[tuple[str, str, int]]:
  """(file, function, lines) of every function under `root` longer than MAX_FUNCTION_LINES."""
  out = []
  for path in sorted(root.rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        n = node.end_lineno - node.lineno + 1
        if n > MAX_FUNCTION_LINES:
          out.append((path.relative_to(root.parent).as_posix(), node.name, n))
  return out


def test_no_function_is_longer_than_the_limit():
  found = [f for f in long_functions(ROOT) if f[:2] not in LONG_BY_DESIGN]
  assert found == []


def test_the_length_check_finds_a_long_function(tmp_path):
  pkg = tmp_path / "pkg"
  pkg.mkdir()
  (pkg / "m.py").write_text("def f():\n" + "  x = 1\n" * MAX_FUNCTION_LINES + "\n\ndef g():\n  return 1\n")
  assert long_functions(pkg) == [("pkg/m.py", "f", MAX_FUNCTION_LINES + 1)]
