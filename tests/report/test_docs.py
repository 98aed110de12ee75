"""The `jaxscale` commands shown in README.md and docs/*.md run, on a small study shaped like the
default one (runs/default holds the synthetic study), and stay inside its data.

A command is a line of a fenced block that starts with `jaxscale ` (continuation lines joined; a
`# comment` or a description after two spaces is cut). Left out: synopsis lines with placeholders
(FILE, CFG, [...], a|b), `jaxscale study` without --dry-run (training; tests/study/test_study.py
runs the smoke study end to end), and examples on a file of the user's that the study does not have
(e.g. curves.csv); those are printed as skipped.
"""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
PLACEHOLDER = re.compile(r"\b[A-Z]{2,}\b|\[|\||<|\.\.\.")


def _strip_comment(text: str) -> str:
  """The command without a `# comment` or a description set off by two spaces (not an option)."""
  parts = re.split(r"\s{2,}", text.split(" #")[0].strip())
  kept = [parts[0]]
  for part in parts[1:]:
    if not part.startswith("-"):
      break
    kept.append(part)
  return " ".join(kept).strip()


def _missing_input(command: str, cwd: pathlib.Path) -> str | None:
  """A data file the command reads that is not in `cwd` (a user's own CSV), else None."""
  args = shlex.split(command)
  for i, arg in enumerate(args):
    if re.search(r"\.(csv|jsonl|json)$", arg) and args[i - 1] != "--out" and not (cwd / arg).exists():
      return arg
  return None


def documented_commands(paths=DOCS) -> list[tuple[str, str]]:
  """(file name, command) for every runnable `jaxscale` command in fenced blocks of `paths`."""
  out = []
  for path in paths:
    fenced, pending = False, ""
    for line in path.read_text(encoding="utf-8").splitlines():
      if line.lstrip().startswith("```"):
        fenced, pending = not fenced, ""
        continue
      if not fenced:
        continue
      text = (pending + " " + line.strip()) if pending else line.strip()
      if text.endswith("\\"):
        pending = text[:-1].strip()
        continue
      pending = ""
      if not text.startswith("jaxscale "):
        continue
      raw = text.split(" #")[0]
      if PLACEHOLDER.search(raw.replace("M=", "m=").replace("Dp=", "dp=").replace("Df=", "df=")):
        continue
      text = _strip_comment(raw)
      if text.startswith("jaxscale study") and "--dry-run" not in text:
        continue
      out.append((path.name, text))
  return out


def test_the_parser_finds_and_skips_the_right_lines(tmp_path):
  doc = tmp_path / "d.md"
  doc.write_text("text jaxscale fit x\n```\njaxscale fit a.jsonl --at M=1,Df=2 \\\n    --out f.json\n"
                 "jaxscale fit FILE --law L\njaxscale data list     # what is there\n"
                 "jaxscale report --workdir w  rebuild the report\n"
                 "jaxscale study  --config c.py --workdir w  --dry-run\n"
                 "jaxscale study --config c.py --workdir w\n```\n")
  assert documented_commands([doc]) == [("d.md", "jaxscale fit a.jsonl --at M=1,Df=2 --out f.json"),
                                        ("d.md", "jaxscale data list"),
                                        ("d.md", "jaxscale report --workdir w"),
                                        ("d.md", "jaxscale study --config c.py --workdir w --dry-run")]
  assert _missing_input("jaxscale fit a.jsonl --out f.json", tmp_path) == "a.jsonl"
  assert _missing_input("jaxscale fit d.md --out f.json", tmp_path) is None


@pytest.fixture(scope="module")
def docs_run(study, tmp_path_factory):
  """Runs every documented command in a folder whose runs/default is a copy of the study."""
  workdir, _, _, _ = study
  cwd = tmp_path_factory.mktemp("docs")
  default = cwd / "runs" / "default"
  default.mkdir(parents=True)
  for name in ("study.json", "records.jsonl", "curves.jsonl"):
    shutil.copy(os.path.join(workdir, name), default / name)
  env = dict(os.environ, CI="true", JAX_PLATFORMS="cpu", TFDS_DATA_DIR=str(cwd / "tfds"))
  results, skipped = [], []
  for source, command in documented_commands():
    missing = _missing_input(command, cwd)
    if missing:  # an example on the user's own file, not on the study
      skipped.append((source, command, missing))
      continue
    proc = subprocess.run([sys.executable, "-m", "jaxscale"] + shlex.split(command)[1:], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    results.append((source, command, proc))
  print("ran:", *[f"  {s}: {c}" for s, c, _ in results], "skipped (input file not in the study):",
        *[f"  {s}: {c}" for s, c, _ in skipped], sep="\n")
  return cwd, results


def test_documented_commands_run_and_stay_inside_the_data(docs_run):
  _, results = docs_run
  assert any("jaxscale fit" in c for _, c, _ in results) and any("jaxscale report" in c for _, c, _ in results)
  for source, command, proc in results:
    assert proc.returncode == 0, f"{source}: {command}\n{proc.stderr[-2000:]}"
    assert "outside the range" not in proc.stderr + proc.stdout, f"{source}: {command}"
    lines = [l for l in proc.stderr.splitlines() if "warning" in l.lower()]
    assert len(lines) == len(set(lines)), f"{source}: {command} repeats a warning"


def test_report_command_rebuilds_the_report_byte_identically(study, docs_run):
  _, _, out, _ = study
  cwd, results = docs_run
  assert any(c.startswith("jaxscale report --workdir runs/default") for _, c, _ in results)
  rebuilt = cwd / "runs" / "default" / "report"
  for name in ("report.md", "report.html", "delta_e.png"):
    assert (rebuilt / name).read_bytes() == open(os.path.join(out["folder"], name), "rb").read(), name


def test_the_synthetic_study_mirrors_the_default_config():
  """The documented commands name the default study's values; the synthetic one must share them (its
  seeds are the default's first three: fewer, to stay small, but none the default lacks)."""
  import synthetic
  from jaxscale import config as config_lib
  from jaxscale import models
  default = config_lib.load(str(REPO / "configs" / "default.py"), [])
  s = default.study
  assert tuple(s.models) == tuple(m for m, _, _ in synthetic.MODELS)
  assert (tuple(s.dp), tuple(s.df)) == (synthetic.DPS, synthetic.DFS)
  assert tuple(s.seeds)[:len(synthetic.SEEDS)] == synthetic.SEEDS
  assert default.finetune.dataset == synthetic.config().finetune.dataset
  size = int(default.data.image_size)
  for name, m, m_pretrain in synthetic.MODELS:  # 20 jaxscale_symbols classes, 52 glyph classes
    assert (models.param_count(name, 20, size), models.param_count(name, 52, size)) == (m, m_pretrain)


# ----------------------------------------------------------------------------- docs match the program

def _options(parser, path):
  """(subcommand path, --flag) for every long option of `parser` and its nested subcommands."""
  import argparse
  for action in parser._actions:
    if isinstance(action, argparse._SubParsersAction):
      for name, sub in action.choices.items():
        yield from _options(sub, path + [name])
    else:
      for flag in action.option_strings:
        if flag.startswith("--") and flag != "--help":
          yield path, flag


def _cli_summary() -> dict[str, str]:
  """The README's CLI summary: top-level command -> the text of its lines (a command's lines run
  from one starting with `jaxscale NAME` to the next starting with `jaxscale `)."""
  text = (REPO / "README.md").read_text(encoding="utf-8")
  block = text[text.index("## The CLI at a glance"):]
  block = block[block.index("```") + 3:]
  block = block[:block.index("```")]
  out, current = {}, None
  for line in block.splitlines():
    if line.startswith("jaxscale "):
      current = line.split()[1]
      out[current] = out.get(current, "") + "\n"
    if current:
      out[current] += line + "\n"
  return out


def test_every_flag_of_every_subcommand_is_in_the_readme_summary():
  import argparse
  from jaxscale import cli
  summary = _cli_summary()
  missing = []
  for command in cli.available_commands():
    parser = cli.build_parser(load=command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    if command not in summary:
      missing.append(command)
      continue
    for path, flag in _options(sub, [command]):
      if not re.search(re.escape(flag) + r"(?![\w-])", summary[command]):
        missing.append(f"{' '.join(path)} {flag}")
  assert not missing, f"the README's CLI summary lacks: {', '.join(missing)}"


def test_every_option_has_help_text():
  import argparse
  from jaxscale import cli
  silent = []
  for command in cli.available_commands():
    parser = cli.build_parser(load=command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    stack = [(sub, [command])]
    while stack:
      p, path = stack.pop()
      for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
          stack += [(s, path + [n]) for n, s in a.choices.items()]
        elif a.option_strings and not a.help:
          silent.append(f"{' '.join(path)} {a.option_strings[-1]}")
  assert not silent, f"options without help text: {', '.join(silent)}"


def test_every_registered_dataset_and_rung_is_documented():
  from jaxscale import cli, models
  from jaxscale.data import builders, sources
  data_md = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
  models_md = (REPO / "docs" / "models.md").read_text(encoding="utf-8")
  names = builders.embedded_names() + list(sources.VIEWS)
  assert [n for n in names if f"`{n}`" not in data_md] == []
  bases = sorted({n.split("/")[0] for n in builders.embedded_names()})
  assert [b for b in bases if f"### `{b}`" not in data_md] == []   # a section describes each
  summary = cli._summary("jaxscale.data.command")   # what `jaxscale --help` and `data --help` say
  assert [b for b in bases if b not in summary] == []
  assert [n for n in models.names() if f"`{n}`" not in models_md] == []
  from jaxscale import config as config_lib
  default = config_lib.load(str(REPO / "configs" / "default.py"), [])
  prose = models_md[:models_md.index("<!-- BEGIN rung table")]   # not only the generated table
  assert [m for m in default.study.models if f"`{m}`" not in prose] == []
  readme = (REPO / "README.md").read_text(encoding="utf-8")
  for dataset in (default.pretrain.dataset, default.finetune.dataset):
    assert dataset in readme and f"`{dataset.split('/')[0]}`" in data_md
