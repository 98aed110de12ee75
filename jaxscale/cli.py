"""The `jaxscale` console script: a dispatcher of subcommands.

Each capability registers itself by providing a module ``jaxscale.<package>.command`` with

* ``HELP``: a one-line summary shown by ``jaxscale --help``;
* ``add_arguments(parser)``: its argparse arguments (use :func:`add_config_argument` for configs);
* ``run(args) -> int``: does the work; ``args.config_overrides`` holds ``--config.x=v`` items.

A subcommand whose module does not exist is not listed. A :class:`JaxscaleError`, and an
``OSError`` (a path the file system refused: read-only, full, missing; also one that a library
reports as text, :func:`jaxscale.fileio.os_error_of`), is printed as one line and exits with
status 2; any other exception keeps its traceback. Workdir locks a command took
(:func:`jaxscale.fileio.lock_workdir`) are released when it ends.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import sys
from typing import Sequence

from jaxscale import __version__, fileio
from jaxscale.errors import JaxscaleError

# Subcommand name -> module providing it, in the order `--help` lists them.
COMMANDS = {
    "study": "jaxscale.study.command",
    "train": "jaxscale.train.command",
    "fit": "jaxscale.laws.command",
    "predict": "jaxscale.laws.predict_command",
    "report": "jaxscale.report.command",
    "suggest": "jaxscale.study.suggest_command",
    "data": "jaxscale.data.command",
    "plan": "jaxscale.plan.command",
}

EXIT_USER_ERROR = 2
# An OSError with one of these (or naming a path) is the file system refusing, not a bug.
FILE_SYSTEM_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def available_commands() -> dict[str, str]:
  """The subcommands whose modules exist in this installation."""
  found = {}
  for name, module in COMMANDS.items():
    try:
      if importlib.util.find_spec(module) is not None:
        found[name] = module
    except ModuleNotFoundError:
      pass
  return found


def add_config_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
  """Adds ``--config PATH[:ARG]``; ``--config.a.b=v`` overrides are collected separately."""
  parser.add_argument(
      "--config", required=required, metavar="PATH[:ARG]",
      help="config file with get_config(arg); override any field with --config.FIELD=VALUE, "
           "e.g. --config.pretrain.optim.lr=3e-4")


def load_config(args: argparse.Namespace):
  """Loads and validates the config named by ``args.config`` with its overrides, and splits the CPU
  into ``config.engine.cpu_devices`` devices (before JAX starts; see
  :func:`jaxscale.train.sharding.use_cpu_devices`)."""
  from jaxscale import config as config_lib
  from jaxscale.train import sharding
  config = config_lib.load(args.config, getattr(args, "config_overrides", []))
  sharding.use_cpu_devices(int(config.engine.cpu_devices))
  return config


def build_parser(commands: dict[str, str] | None = None, load: str | None = None) -> argparse.ArgumentParser:
  """The top-level parser; only the module of subcommand `load` is imported."""
  commands = available_commands() if commands is None else commands
  parser = argparse.ArgumentParser(
      prog="jaxscale",
      description="Data-efficient visual transfer-learning scaling studies: pretrain, distil, "
                  "fine-tune, fit scaling laws and find the distillation boundary.")
  parser.add_argument("--version", action="version", version=f"jaxscale {__version__}")
  parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, module_name in commands.items():
    if name == load:
      module = importlib.import_module(module_name)
      p = sub.add_parser(name, help=module.HELP, description=module.HELP)
      module.add_arguments(p)
      p.set_defaults(_run=module.run)
    else:
      sub.add_parser(name, help=_summary(module_name), add_help=False)
  return parser


def _summary(module_name: str) -> str:
  """The HELP line of a command module, read without importing heavy dependencies."""
  spec = importlib.util.find_spec(module_name)
  try:
    import ast
    tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    for node in tree.body:
      if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "HELP" for t in node.targets):
        return ast.literal_eval(node.value)
  except Exception:  # pragma: no cover - a broken module shows its error when run
    pass
  return ""


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  from jaxscale.config import split_config_args
  overrides, rest = split_config_args(argv)
  commands = available_commands()
  chosen = next((a for a in rest if not a.startswith("-")), None)
  parser = build_parser(commands, load=chosen if chosen in commands else None)
  args = parser.parse_args(rest)
  args.config_overrides = overrides
  from jaxscale.progress import setup_logging
  setup_logging(args.verbose)
  if args.command is None:
    parser.print_help()
    return EXIT_USER_ERROR
  if overrides and not hasattr(args, "config"):
    print(f"jaxscale: error: '{args.command}' takes no --config overrides ({overrides[0]})", file=sys.stderr)
    return EXIT_USER_ERROR
  try:
    return int(args._run(args) or 0)
  except JaxscaleError as e:
    print(f"jaxscale: error: {e}", file=sys.stderr)
    return EXIT_USER_ERROR
  except KeyboardInterrupt:
    print("jaxscale: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # the file system refused (read-only, full, a file in the way): a path to change
    refused = fileio.os_error_of(e)
    if refused is None or (refused.filename is None and refused.errno not in FILE_SYSTEM_ERRNOS):
      raise
    print(f"jaxscale: error: {os_error_line(refused)}", file=sys.stderr)
    return EXIT_USER_ERROR
  finally:
    fileio.release_locks()


def os_error_line(e: OSError) -> str:
  """One line for a refused file operation: the path, the errno's words and name, what to change."""
  todo = {"ENOSPC": "free space on that disk", "EDQUOT": "free space in your quota",
          "EROFS": "use a path on a writable file system", "EACCES": "use a path you may write",
          "EPERM": "use a path you may write"}.get(fileio.errno_name(e), "fix the path")
  return f"{fileio.describe_os_error(e)}; {todo}, then run the command again"


if __name__ == "__main__":
  sys.exit(main())
