"""`jaxscale plan`: per model of a study's grid, compile the train step and report what it costs."""

from __future__ import annotations

import argparse

from jaxscale.errors import JaxscaleError

HELP = "capacity plan: per-device memory, FLOPs per step, largest batch that fits, grid total and time"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from jaxscale import cli
  cli.add_config_argument(parser)
  parser.add_argument("--device-memory", default="", metavar="SIZE",
                      help="memory of one device, e.g. 80GB or 16GiB (default: the backend's own "
                           "limit on GPU/TPU; none on CPU)")
  parser.add_argument("--flops-per-s", type=float, default=0.0, metavar="F",
                      help="sustained training throughput of all devices together for the wall-time "
                           "estimate (default: measured here, by timing one of the study's train programs)")
  parser.add_argument("--no-search", action="store_true",
                      help="skip the largest-batch search (one compile per row instead of four)")


def run(args: argparse.Namespace) -> int:
  from jaxscale import cli
  from jaxscale.study import console, plan
  if not 0 <= args.flops_per_s < float("inf"):
    raise JaxscaleError(f"--flops-per-s must be a finite rate > 0 (FLOP/s of all devices together, e.g. 2e10), "
                        f"or 0 for the default; got {args.flops_per_s:g}")
  limit = plan.parse_bytes(args.device_memory) if args.device_memory else None
  if limit is not None and limit <= 0:
    raise JaxscaleError(f"--device-memory must be more than 0 bytes, e.g. 80GB or 16GiB; got {args.device_memory!r}")
  config = cli.load_config(args)
  rows = plan.capacity_table(config, device_memory_bytes=limit, search=not args.no_search)
  plan.print_table(rows, args.flops_per_s, "stated")
  plan.check_fits(rows)
  if not args.flops_per_s:
    print(console.eta_line(console.study_plan(config), config))
  return 0
