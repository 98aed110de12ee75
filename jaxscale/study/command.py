"""`jaxscale study`: run the whole grid (resumable), fit the laws, solve the boundary, write the report."""

from __future__ import annotations

import argparse
import os

from jaxscale.errors import JaxscaleError

HELP = "run a whole scaling study: grid of cells (resumable), fitted laws, distillation boundary, report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from jaxscale import cli
  cli.add_config_argument(parser)
  parser.add_argument("--workdir", required=True, help="study directory (records, checkpoints, fits, report)")
  parser.add_argument("--dry-run", action="store_true",
                      help="print the plan (cells, FLOPs, time) and the capacity table of `jaxscale plan`; "
                           "write nothing")
  parser.add_argument("--force-new", action="store_true",
                      help="the workdir holds a study with another config: archive it and start anew")
  parser.add_argument("--no-progress", action="store_true", help="no per-cell progress lines")
  parser.add_argument("--verbose", action="store_true", dest="show_cells",
                      help="also print the per-cell table (id, stage, GFLOPs, done/todo) before training")
  parser.add_argument("--engine", choices=("local", "ray"), default="local",
                      help="local: train the groups in this process (default); ray: each group a task on a "
                           "Ray cluster, with config.engine.resources (needs jaxscale[ray])")
  parser.add_argument("--address", default="",
                      help="--engine ray: the cluster to join (auto | HOST:PORT); default: start Ray on this machine")
  parser.add_argument("--adaptive", action="store_true",
                      help="after round 1 (the config's seeds) add seed pairs where a verdict is still open, round "
                           "after round (config.study.adaptive; rounds logged in <workdir>/rounds.json)")
  parser.add_argument("--max-runs", default=None, metavar="N",
                      help="--adaptive: at most N runs added after round 1 (default: config.study.max_runs; "
                           "0 there: no budget but config.study.max_rounds)")


def run(args: argparse.Namespace) -> int:
  from jaxscale import cli, fileio
  from jaxscale.report import command as report_command
  from jaxscale.study import console, plan, rounds, runner
  config = cli.load_config(args)
  if args.address and args.engine != "ray":
    raise JaxscaleError("--address names a Ray cluster; pass it with --engine ray")
  max_runs = _adaptive(config, args)
  runner.check_law(config)  # before any cell trains: the fit at the end needs it
  workdir = os.path.abspath(args.workdir)
  if args.dry_run:
    runner.check_sizes(config, dry_run=True)
    from jaxscale.train import sharding
    sharding.enable_compilation_cache()
    p = console.print_plan(config, workdir, cells=True, eta=False)
    print()
    rows = plan.capacity_table(config, device_memory_bytes=plan.device_memory(), search=False)
    plan.print_table(rows)
    plan.check_fits(rows)
    print(console.eta_line(p, config))
    if config.study.adaptive:
      print(rounds.describe_first(config, max_runs))
    return 0
  import jax

  from jaxscale.train import sharding
  if args.engine == "ray":
    jax.config.update("jax_platforms", "cpu")  # the driver fits and reports; the devices are the tasks'
  else:
    sharding.initialize_distributed()  # a no-op on one host
  sharding.enable_compilation_cache()
  main = jax.process_index() == 0
  if main:
    fileio.lock_workdir(workdir, "jaxscale study")  # one writer per workdir (on Ray: this driver)
  runner.check_sizes(config, dry_run=False)
  if args.engine == "local" and plan.device_memory() is not None:  # an accelerator: refuse what cannot fit
    plan.check_fits(plan.capacity_table(config, device_memory_bytes=plan.device_memory(), search=False))
  if main:  # study.json only once the whole config is known to be runnable
    runner.prepare_workdir(config, workdir, force_new=args.force_new)
    console.print_plan(config, workdir, cells=args.show_cells, measure=args.engine == "local")
  if args.engine == "ray":
    from jaxscale.study import ray_engine
    ray_engine.run_cells(config, workdir, address=args.address, show_progress=not args.no_progress)
  elif config.study.adaptive:
    rounds.run(config, workdir, max_runs, show_progress=main and not args.no_progress)
  else:
    runner.run_cells(config, workdir, show_progress=main and not args.no_progress)
  if main:
    from jaxscale.progress import headline
    print("\n".join(headline(report_command.build(config, workdir).splitlines(), more="report.md")))
  return 0


def _adaptive(config, args: argparse.Namespace) -> int | None:
  """Turns config.study.adaptive on for --adaptive and checks the rounds' inputs; the run budget."""
  from jaxscale.study import rounds
  if args.adaptive:
    config.study.adaptive = True
  if not config.study.adaptive:
    if args.max_runs is not None:
      raise JaxscaleError("--max-runs is the budget of adaptive rounds; pass it with --adaptive")
    return None
  if args.engine == "ray":
    raise JaxscaleError("adaptive rounds run with --engine local; leave out --engine ray (or --adaptive)")
  budget = args.max_runs if args.max_runs is not None else (int(config.study.max_runs) or None)
  return rounds.check(config, budget)
