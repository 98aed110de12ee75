"""A study's training four ways, from one command: total images/s, wall time and fraction of the matmul peak.

  python benchmarks/bench_study.py [--config configs/default.py] [--fraction half|full]
                                   [--ways unbatched,engine,engine-warm,torch] [--rounds N]

1. ``unbatched``: the behaviour before the group engine, reachable by config: one run per group
   (``engine.group_size=1``), one step per dispatch (``steps_per_dispatch=1``), the host waiting for
   every step's metrics (``sync_every_step``), images read by grain (``data_on_device=never``), the
   CPU one device (``cpu_devices=1``).
2. ``engine``: the group engine with the config's settings (groups vmapped, K scanned steps per
   dispatch, the data on the device, the CPU split into one device per core and each group's runs
   spread over them).
   Its child process starts with an empty compilation cache (as a user's first ``jaxscale study``
   does) and fills it.
3. ``engine-warm``: the engine again, its programs read from that cache instead of compiled: a rerun,
   a resumed study, or a second study with the same models and settings (``jaxscale study`` keeps
   the cache in ``~/.cache/jaxscale/xla``).
4. ``torch``: the same models (``benchmarks/bench_models.py``'s PyTorch twins), trained one run at a
   time in PyTorch on the CPU with the same subsets, steps, batch, AdamW and KD loss, as a user would with
   a timm-style script.

``--fraction half`` (the default) keeps the config's smallest two models, its smallest and largest Dp and
Df, and two seeds; ``full`` runs the whole grid. The machine's peak is the FLOP/s of a large float32
matmul measured in the same run (``bench_train.matmul_peak``); training FLOPs are the records' ``flops``.
Wall times include setup, compilation and evaluation: what a user waits for. Each JAX way runs in a
fresh child process (the CPU's device count is fixed when JAX starts, and no way inherits another's
compiled programs in memory; only ``engine-warm`` reads the cache ``engine`` wrote); the script prints
one table.

5. ``commit``: the engine of an earlier commit (``--commit``, default c020453, the per-cell engine the
   group engine replaced): a ``git worktree`` of it, run with this interpreter and venv as a whole
   ``jaxscale study`` process on ``--commit-config`` (a path in that commit's tree, so its own config
   schema loads it), with an empty compilation cache; and 6. ``study``: this checkout's ``jaxscale
   study`` on the same config file, the same way. ``--ways study,commit`` compares them (their wall
   times include startup, fitting and the report); the config must load in both versions.

``--set KEY=VALUE`` (repeatable) overrides the config for every way, e.g. the reduced grid the per-cell
engine of c020453 was timed on: ``--ways study,commit --fraction full --set
study.models=vit_tiny_xs,vit_tiny_s --set study.dp=100,300,1000 --set study.df=100,300``.

``--rounds N`` runs the ways N times in turn (each round's ``engine`` starts from an empty cache) and
ends the table with each way's median ratio over the rounds and its range. On a small shared machine
wall times vary by a fifth from one run to the next; a ratio is judged by its median, with the
rounds' spread beside it, not by one round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import matmul_peak  # noqa: E402

from jaxscale import config as config_lib  # noqa: E402
from jaxscale.data import builders, sources, subsets  # noqa: E402
from jaxscale.data.seeding import derive_seed  # noqa: E402
from jaxscale.study import grid, runner  # noqa: E402
from jaxscale.train import sharding, steps as steps_lib  # noqa: E402


def shrink(config, fraction: str):
  """The stated fraction of the config's grid."""
  s = config.study
  if fraction == "half":
    s.models = tuple(s.models[:2])
    s.dp = (min(s.dp), max(s.dp))
    s.df = (min(s.df), max(s.df))
    s.seeds = tuple(s.seeds[:2])
  return config


def run_jax(config, engine: dict) -> dict:
  config = config_lib.validate(config.copy_and_resolve_references())
  config.engine.update(engine)
  with tempfile.TemporaryDirectory() as workdir:
    runner.prepare_workdir(config, workdir)
    t = time.perf_counter()
    rows = runner.run_cells(config, workdir, show_progress=False)
    wall = time.perf_counter() - t
  return {"wall": wall, "images": sum(r["steps"] * r["batch_size"] for r in rows),
          "flops": sum(r["flops"] for r in rows), "runs": len(rows)}


def run_torch(config) -> dict:
  """Every cell of the grid in PyTorch, one run at a time (same subsets, steps, batch, optimizer, KD)."""
  import torch
  import torch.nn.functional as F
  import bench_models
  torch.manual_seed(0)
  data_dir, size_px = config.data.data_dir, int(config.data.image_size)

  def split(stage, which):
    s = config[stage]
    src = sources.open_source(s.dataset, s[which], data_dir)
    from jaxscale.data import pipeline
    images, labels = pipeline.read_images(src, np.arange(len(src)), size_px, 3)
    x = torch.from_numpy(images.astype(np.float32) * (2 / 255) - 1)  # NHWC, as bench_models.py takes it
    return x, torch.from_numpy(labels.astype(np.int64)), sources.num_classes(s.dataset, data_dir)

  data = {st: (split(st, "train_split"), split(st, "eval_split")) for st in ("pretrain", "finetune")}
  nets, images, flops = {}, 0, 0.0
  t0 = time.perf_counter()
  for cell in grid.expand(config):
    stage = cell.stage
    (x, y, classes), (xe, ye, _) = data[stage]
    spec = bench_models.models.spec(cell.model)
    net = (bench_models.TorchViT if spec.family == "vit" else bench_models.TorchResNet)(spec.config, classes, size_px)
    if cell.kind == grid.FINETUNE:
      state = {k: v for k, v in nets[cell.pretrain_cell().id].state_dict().items() if not k.startswith("head")}
      net.load_state_dict(state, strict=False)
    o = config[stage].optim
    size = cell.df if cell.kind == grid.FINETUNE else cell.dp
    idx = subsets.nested_subset(y.numpy(), size, derive_seed(cell.seed, f"{stage}/subset"))
    steps = steps_lib.num_train_steps(o, size)
    lrs = steps_lib.learning_rate_table(o, steps)
    opt = torch.optim.AdamW(net.parameters(), lr=float(o.lr), betas=(o.momentum, 0.999), weight_decay=o.weight_decay)
    teacher = nets.get(grid.teacher_of(config.study).id) if grid.kd_alpha(config, cell) > 0 else None
    alpha, temp = float(config.distill.alpha), float(config.distill.temperature)
    rng = np.random.default_rng(cell.seed)
    for t in range(steps):
      b = torch.from_numpy(idx[rng.integers(0, len(idx), int(o.batch_size))])
      for g in opt.param_groups:
        g["lr"] = float(lrs[t])
      logits = net(x[b])
      loss = F.cross_entropy(logits, y[b])
      if teacher is not None:
        with torch.no_grad():
          t_logits = teacher(x[b])
        kl = F.kl_div(F.log_softmax(logits / temp, -1), F.log_softmax(t_logits / temp, -1), log_target=True,
                      reduction="batchmean")
        loss = (1 - alpha) * loss + alpha * temp ** 2 * kl
      opt.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(net.parameters(), float(o.grad_clip))
      opt.step()
    with torch.no_grad():
      _ = sum(int((net(xe[i:i + 512]).argmax(-1) != ye[i:i + 512]).sum()) for i in range(0, len(xe), 512))
    nets[cell.id] = net
    images += steps * int(o.batch_size)
    flops += runner.cell_flops(config, cell)
  return {"wall": time.perf_counter() - t0, "images": images, "flops": flops, "runs": len(grid.expand(config))}


JAX_WAYS = {
    "unbatched": dict(group_size=1, steps_per_dispatch=1, sync_every_step=True, data_on_device="never",
                      cpu_devices=1),
    "engine": {},
    "engine-warm": {},
}


# The ways that run a whole `jaxscale study` process on --commit-config from the commit's tree.
STUDY_WAYS = ("commit", "study")


def study_process(repo: str, config_path: str, fraction: str, data_dir: str, extra: tuple[str, ...] = ()) -> dict:
  """One whole ``jaxscale study`` process of the package in `repo` (a checkout of any commit, run
  with this interpreter and `repo` first on the path) on `config_path`, in a fresh workdir with an
  empty compilation cache (the variable read by the commit's code, and JAX's own); its row from the
  records it wrote. Wall time includes startup, fit and report. `fraction` "half" passes the
  :func:`shrink` grid as overrides; `extra` are more overrides."""
  overrides = ([f"--config.data.data_dir={data_dir}"] if data_dir else []) + list(extra)
  if fraction == "half":
    c = shrink(config_lib.load(config_path, overrides), "half").study   # today's loader: the grid's values
    overrides += [f"--config.study.{k}={','.join(map(str, c[k]))}" for k in ("models", "dp", "df", "seeds")]
  with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(repo), JAXSCALE_COMPILATION_CACHE=os.path.join(tmp, "xla"),
               JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "xla"))
    workdir = os.path.join(tmp, "study")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jaxscale", "study", "--config", config_path, "--workdir", workdir,
                    "--no-progress", *overrides], check=True, cwd=os.path.abspath(repo), env=env,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    with open(os.path.join(workdir, "records.jsonl"), encoding="utf-8") as f:
      rows = [json.loads(line) for line in f if line.strip()]
  images = sum(int(r["steps"]) * int(r.get("batch_size", 0)) for r in rows)
  return {"wall": wall, "images": images, "flops": sum(float(r["flops"]) for r in rows), "runs": len(rows),
          "devices": "-"}


@contextlib.contextmanager
def worktree(rev: str):
  """A detached git worktree of commit `rev` of this repository, removed afterwards."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = tempfile.mkdtemp(prefix="bench-study-commit-")
  subprocess.run(["git", "-C", root, "worktree", "add", "--detach", path, rev], check=True, capture_output=True)
  try:
    yield path
  finally:
    subprocess.run(["git", "-C", root, "worktree", "remove", "--force", path], check=False, capture_output=True)


def child(args, way: str, cache_dir: str = "") -> dict:
  """Runs JAX way `way` in a fresh process (with a compilation cache in `cache_dir`, if any); returns its row."""
  cmd = [sys.executable, os.path.abspath(__file__), "--child", way, "--config", args.config,
         *(f"--set={kv}" for kv in args.set),
         "--fraction", args.fraction, "--data-dir", args.data_dir, "--cache-dir", cache_dir]
  out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "configs", "default.py"))
  ap.add_argument("--fraction", choices=("half", "full"), default="half")
  ap.add_argument("--ways", default="unbatched,engine,engine-warm,torch")
  ap.add_argument("--rounds", type=int, default=1, help="run the ways this many times in turn")
  ap.add_argument("--data-dir", default="")
  ap.add_argument("--commit", default="c020453", help="the earlier engine the 'commit' way runs")
  ap.add_argument("--commit-config", default="configs/default.py",
                  help="'commit' and 'study' ways: the config, a path inside the commit's tree (both ways run it)")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="a config override for every way (e.g. study.dp=100,300,1000), as --config.KEY=VALUE")
  ap.add_argument("--child", default=None, help=argparse.SUPPRESS)   # run one JAX way, print its row
  ap.add_argument("--cache-dir", default="", help=argparse.SUPPRESS)  # the child's compilation cache
  args = ap.parse_args(argv)
  if args.rounds < 1:
    ap.error(f"--rounds must be a positive integer, got {args.rounds}")
  args.overrides = tuple(f"--config.{kv}" for kv in args.set)
  config = shrink(config_lib.load(args.config, ([f"--config.data.data_dir={args.data_dir}"] if args.data_dir else [])
                                  + list(args.overrides)), args.fraction)
  if args.child:
    engine = JAX_WAYS[args.child]
    sharding.use_cpu_devices(int(engine.get("cpu_devices", config.engine.cpu_devices)))  # as the CLI does
    if args.cache_dir:
      sharding.enable_compilation_cache(args.cache_dir)
    print(json.dumps({**run_jax(config, engine), "devices": jax.device_count()}))
    return 0
  for stage in ("pretrain", "finetune"):
    if config[stage].dataset.startswith("jaxscale_"):
      builders.ensure_built(config[stage].dataset, config.data.data_dir)
  peak = matmul_peak(2048, np.float32)
  ways = args.ways.split(",")
  if "engine-warm" in ways and "engine" not in ways[:ways.index("engine-warm")]:
    ap.error("--ways: engine-warm reuses the programs the engine way compiled; list engine before it")
  rounds = []
  with (worktree(args.commit) if set(STUDY_WAYS) & set(ways) else contextlib.nullcontext()) as tree:
    args.tree = tree
    print(header(args, config, ways, peak))
    print(f"{'round':>5} {'way':<11} {'devices':>7} {'runs':>5} {'images':>10} {'wall s':>8} {'img/s':>8} "
          f"{'of peak':>8} {'vs unbatched':>12}", flush=True)
    for i in range(args.rounds):
      cache = tempfile.mkdtemp(prefix="bench-study-xla-")  # the engine's cache: empty for "engine", filled after
      try:
        rounds.append(run_ways(args, config, ways, cache, peak, i + 1))
      finally:
        shutil.rmtree(cache, ignore_errors=True)
  for line in summary(rounds):
    print(line)
  return 0


def speedup(a: dict, b: dict) -> float:
  """How many times faster row `a` trains than row `b` (images/s over images/s; wall over wall when
  a row does not know its images: records of an earlier commit may lack the batch size)."""
  if not (a["images"] and b["images"]):
    return b["wall"] / a["wall"]
  return (a["images"] / a["wall"]) / (b["images"] / b["wall"])


def summary(rounds: list[dict[str, dict]]) -> list[str]:
  """Comment lines: each way's speedup over unbatched and the engine's over torch, per round's own
  reference; with several rounds the median and the range."""
  pairs = ([(name, "unbatched") for name in rounds[0] if name != "unbatched"] + [("engine", "torch")]
           + [("study", "commit")])
  out = []
  for a, b in pairs:
    if a not in rounds[0] or b not in rounds[0]:
      continue
    r = sorted(speedup(rows[a], rows[b]) for rows in rounds)
    spread = f" (median of {len(r)} rounds; range {r[0]:.2f}x-{r[-1]:.2f}x)" if len(r) > 1 else ""
    out.append(f"# {a} vs {b}: {float(np.median(r)):.2f}x{spread}")
  return out


def header(args, config, ways: list[str], peak: float) -> str:
  """The table's first line: the platform, the grid each way runs and the matmul peak. The ``commit``
  and ``study`` ways run ``--commit-config`` from the commit's tree, whose grid is not ``--config``'s:
  both are named where they differ (the commit's read with this checkout's loader, or only named
  when that loader cannot read it)."""
  def grid_of(c) -> str:
    s = c.study
    return f"models {s.models}, dp {s.dp}, df {s.df}, arms {s.arms}, seeds {s.seeds}"
  parts = []
  own = [w for w in ways if w not in STUDY_WAYS]
  if own:
    parts.append(f"{', '.join(own)}: {args.config} ({args.fraction}): {grid_of(config)}")
  if args.tree:
    path = os.path.join(args.tree, args.commit_config)
    try:
      grid_text = grid_of(shrink(config_lib.load(path, list(args.overrides)), args.fraction))
    except Exception:   # an earlier schema: this loader cannot read it, the commit's own can
      grid_text = "grid not readable by this checkout's config loader"
    ways_text = ", ".join(w for w in ways if w in STUDY_WAYS)
    parts.append(f"{ways_text}: {args.commit}:{args.commit_config} ({args.fraction}): {grid_text}")
  return (f"# {jax.devices()[0].platform}; " + "; ".join(parts)
          + f"; float32 matmul peak {peak / 1e9:.1f} GFLOP/s")


def run_ways(args, config, ways: list[str], cache: str, peak: float, round_: int = 1) -> dict[str, dict]:
  """Runs and prints each way in order; returns their rows."""
  rows = {}
  for name in ways:
    if name in JAX_WAYS:
      r = rows[name] = child(args, name, cache if name.startswith("engine") else "")
    elif name in STUDY_WAYS:   # whole study processes: the earlier commit's package, or this one
      repo = args.tree if name == "commit" else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
      r = rows[name] = study_process(repo, os.path.join(args.tree, args.commit_config), args.fraction, args.data_dir,
                                          args.overrides)
    else:
      r = rows[name] = {**run_torch(config), "devices": 1}
    base = rows.get("unbatched")
    ratio = f"{speedup(r, base):.2f}x" if base else "-"
    print(f"{round_:>5} {name:<11} {r['devices']:>7} {r['runs']:>5} {r['images']:>10,} {r['wall']:>8.1f} "
          f"{r['images'] / r['wall']:>8,.0f} {r['flops'] / r['wall'] / peak:>8.1%} {ratio:>12}", flush=True)
  return rows


if __name__ == "__main__":
  sys.exit(main())
