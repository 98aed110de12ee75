"""Pilot of the default study's design: many runs per model in one vmapped, scanned program.

Not the study engine: a compact stand-in (data on device, ``lax.scan`` over steps, ``vmap`` over
runs) that uses the package's models, subsets, optimizer, learning-rate schedule and KD loss, so
a design (budget, ladder, teacher, seeds) can be tried on 2 CPU cores in minutes. It prints one
line per run group and a table of errors per (model, Dp, arm) with paired differences.

  python benchmarks/pilot_default.py --models vit_tiny_xs,vit_tiny_s --dp 250,1000,4000 \
      --seeds 0,1,2 --pt-steps 400 --ft-steps 200 --df 100,1000

Subsets are the package's nested class-balanced subsets (``purpose_seed(seed, "<stage>/subset")``)
and inits ``purpose_key(seed, "init")``; the data order is a per-run seeded epoch shuffle (the
study engine's order function may differ, so errors agree statistically, not bit for bit).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxscale import models
from jaxscale.data import builders, sources, subsets
from jaxscale.train import losses
from jaxscale.train import steps as steps_lib
from jaxscale.data.seeding import derive_seed as purpose_seed


def purpose_key(seed: int, purpose: str) -> jax.Array:
  """``fold_in(key(seed), purpose_seed(0, purpose))``, the package's init/head keys."""
  return jax.random.fold_in(jax.random.key(int(seed)), purpose_seed(0, purpose))


def load(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [N, S, S, 1|3], int32 [N]) of a whole split (the embedded sets fit in memory)."""
  builders.ensure_built(name)
  src = sources.open_source(name, split)
  images, labels = src.get_many(np.arange(len(src)))
  return np.stack(images), labels.astype(np.int32)


def to_float(u8: jax.Array) -> jax.Array:
  """uint8 [..., S, S, C] -> float32 [..., S, S, 3] in [-1, 1] (as `jaxscale.data.augment.normalize`)."""
  x = u8.astype(jnp.float32) * jnp.float32(2.0 / 255.0) - jnp.float32(1.0)
  return jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def data_order(subset: np.ndarray, steps: int, batch: int, seed: int) -> np.ndarray:
  """int32 [steps, batch] dataset indices: epochs of seeded shuffles of `subset`, concatenated."""
  rng = np.random.default_rng(purpose_seed(seed, "pilot/order"))
  need = steps * batch
  reps = math.ceil(need / len(subset))
  order = np.concatenate([rng.permutation(subset) for _ in range(reps)])[:need]
  return order.reshape(steps, batch).astype(np.int32)


def lr_table(peak: float, steps: int, warmup_frac: float) -> np.ndarray:
  o = dataclasses.make_dataclass("O", [("lr", float), ("warmup_frac", float)])(peak, warmup_frac)
  return np.array([steps_lib.learning_rate(o, i, steps) for i in range(steps)], np.float32)


SETTINGS = ("adamw", 0.9, 1e-4, 1.0, True)
T = 2.0


def train_group(graphdef, params, data, order, lrs, alphas, teacher=None, chunk=50):
  """Trains R runs at once. params: stacked [R, ...]; order int32 [R, steps, B]; lrs float32
  [R, steps]; alphas float32 [R] (0 = plain). teacher: (graphdef, params) or None. Returns params."""
  tx = steps_lib.make_optimizer(SETTINGS)
  opt = jax.vmap(tx.init)(params)

  def one(p, o, idx, lr, alpha):
    x = to_float(data["image"][idx])
    y = data["label"][idx]
    if teacher is not None:
      tl = jax.lax.stop_gradient(nnx.merge(teacher[0], teacher[1])(x))

    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(x)
      ce = losses.cross_entropy_per_example(logits, y)
      if teacher is None:
        return jnp.mean(ce)
      kl = losses.kl_divergence_per_example(tl, logits, T)
      return jnp.mean((1.0 - alpha) * ce + alpha * T * T * kl)

    loss, g = jax.value_and_grad(loss_fn)(p)
    u, o = tx.update(g, o, p)
    p = jax.tree.map(lambda a, b: a - lr * b, p, u)
    return p, o, loss

  @jax.jit
  def run_chunk(p, o, idx, lr, alpha):
    def body(carry, xs):
      p, o = carry
      i, l = xs
      p, o, loss = jax.vmap(one)(p, o, i, l, alpha)
      return (p, o), loss
    (p, o), loss = jax.lax.scan(body, (p, o), (jnp.swapaxes(idx, 0, 1), jnp.swapaxes(lr, 0, 1)))
    return p, o, loss

  steps = order.shape[1]
  losses_out = []
  for s in range(0, steps, chunk):
    params, opt, loss = run_chunk(params, opt, jnp.asarray(order[:, s:s + chunk]),
                                  jnp.asarray(lrs[:, s:s + chunk]), jnp.asarray(alphas))
    losses_out.append(loss)
  jax.block_until_ready(params)
  return params, np.concatenate([np.asarray(l) for l in losses_out], 0)


def evaluate(graphdef, params, images: jax.Array, labels: jax.Array, chunk=1000) -> np.ndarray:
  """float [R] top-1 error of each run on (images, labels)."""
  @jax.jit
  def wrong(p, x, y):
    logits = jax.vmap(lambda q: nnx.merge(graphdef, q)(to_float(x)))(p)
    return jnp.sum(jnp.argmax(logits, -1) != y[None], axis=1)
  total = 0
  for s in range(0, images.shape[0], chunk):
    total = total + np.asarray(wrong(params, images[s:s + chunk], labels[s:s + chunk]))
  return total / images.shape[0]


def init_params(name, classes, seeds):
  gd = None
  ps = []
  for seed in seeds:
    m = models.create(name, classes, 16, rngs=nnx.Rngs(purpose_key(seed, "init")))
    gd, p = nnx.split(m, nnx.Param)
    ps.append(p)
  return gd, jax.tree.map(lambda *x: jnp.stack(x), *ps)


def new_heads(name, gd, params, classes, seeds):
  """Stacked params of `name` with each run's backbone and a fresh `classes`-way head."""
  ps = []
  for r, seed in enumerate(seeds):
    p = jax.tree.map(lambda x: x[r], params)
    m = models.with_new_head(nnx.merge(gd, p), name, classes, 16,
                             rngs=nnx.Rngs(purpose_key(seed, "finetune/head")))
    gd2, p2 = nnx.split(m, nnx.Param)
    ps.append(p2)
  return gd2, jax.tree.map(lambda *x: jnp.stack(x), *ps)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", default="vit_tiny_xs,vit_tiny_s")
  ap.add_argument("--lrs", default="", help="per-model peak lr (comma list); default --pt-lr")
  ap.add_argument("--dp", default="250,1000,4000")
  ap.add_argument("--seeds", default="0,1")
  ap.add_argument("--arms", default="plain,distilled")
  ap.add_argument("--pt-data", default="jaxscale_glyphs/16px_30k")
  ap.add_argument("--pt-steps", type=int, default=400)
  ap.add_argument("--pt-batch", type=int, default=128)
  ap.add_argument("--pt-lr", type=float, default=3e-3)
  ap.add_argument("--alpha", type=float, default=0.5)
  ap.add_argument("--teacher", default="", help="teacher model ('' = first of --models)")
  ap.add_argument("--teacher-dp", type=int, default=30000)
  ap.add_argument("--teacher-steps", type=int, default=0, help="0 = --pt-steps")
  ap.add_argument("--ft-data", default="")
  ap.add_argument("--df", default="")
  ap.add_argument("--ft-steps", type=int, default=200)
  ap.add_argument("--ft-batch", type=int, default=32)
  ap.add_argument("--ft-lr", type=float, default=1e-3)
  ap.add_argument("--scratch", action="store_true", help="also fine-tune from random init")
  ap.add_argument("--out", default="")
  ap.add_argument("--records", default="",
                  help="only summarise a study's records.jsonl (paired differences per cell)")
  ap.add_argument("--spec", action="append", default=[],
                  help="try an unregistered ViT rung: NAME=width,depth,heads (4 px patches, 16 px)")
  a = ap.parse_args(argv)
  if a.records:
    summarize(from_records(a.records))
    return
  for item in a.spec:
    key, _, dims = item.partition("=")
    w, d, h = (int(x) for x in dims.split(","))
    models._REGISTRY[key] = models._vit(w, d, h, 4, 16)  # pilot only: not a registered rung
  names = a.models.split(",")
  lrs = [float(x) for x in a.lrs.split(",")] if a.lrs else [a.pt_lr] * len(names)
  dps = [int(x) for x in a.dp.split(",")]
  seeds = [int(x) for x in a.seeds.split(",")]
  arms = a.arms.split(",")
  t_start = time.time()

  tr_x, tr_y = load(a.pt_data, "train")
  te_x, te_y = load(a.pt_data, "test")
  classes = int(tr_y.max()) + 1
  data = {"image": jnp.asarray(tr_x), "label": jnp.asarray(tr_y)}
  te = (jnp.asarray(te_x), jnp.asarray(te_y))
  rows = []
  out = {"args": vars(a), "pretrain": [], "finetune": [], "teacher": None, "timing": []}

  teacher = None
  if "distilled" in arms:
    tname = a.teacher or names[0]
    tsteps = a.teacher_steps or a.pt_steps
    tlr = lrs[names.index(tname)] if tname in names else a.pt_lr
    gd, p = init_params(tname, classes, [seeds[0]])
    sub = subsets.nested_subset(tr_y, a.teacher_dp, purpose_seed(seeds[0], "pretrain/subset"))
    t0 = time.time()
    p, _ = train_group(gd, p, data, data_order(sub, tsteps, a.pt_batch, seeds[0])[None],
                       lr_table(tlr, tsteps, 0.1)[None], np.zeros(1, np.float32))
    err = float(evaluate(gd, p, *te)[0])
    dt = time.time() - t0
    print(f"teacher {tname} dp={a.teacher_dp} steps={tsteps}: glyph error {err:.4f} ({dt:.1f}s)", flush=True)
    out["teacher"] = {"model": tname, "dp": a.teacher_dp, "steps": tsteps, "error": err}
    teacher = (gd, jax.tree.map(lambda x: x[0], p))

  ft = None
  if a.ft_data:
    fx, fy = load(a.ft_data, "train")
    gx, gy = load(a.ft_data, "test")
    ft = {"data": {"image": jnp.asarray(fx), "label": jnp.asarray(fy)}, "labels": fy,
          "test": (jnp.asarray(gx), jnp.asarray(gy)), "classes": int(fy.max()) + 1}
    dfs = [int(x) for x in a.df.split(",")]

  for name, lr in zip(names, lrs):
    runs = [(dp, arm, seed) for dp in dps for arm in arms for seed in seeds]
    rseeds = [r[2] for r in runs]
    gd, p = init_params(name, classes, rseeds)
    order = np.stack([data_order(subsets.nested_subset(tr_y, dp, purpose_seed(seed, "pretrain/subset")),
                                 a.pt_steps, a.pt_batch, seed) for dp, _, seed in runs])
    alphas = np.array([a.alpha if arm == "distilled" else 0.0 for _, arm, _ in runs], np.float32)
    t0 = time.time()
    p, loss = train_group(gd, p, data, order, np.tile(lr_table(lr, a.pt_steps, 0.1), (len(runs), 1)),
                          alphas, teacher)
    t_train = time.time() - t0
    err = evaluate(gd, p, *te)
    imgs = len(runs) * a.pt_steps * a.pt_batch
    print(f"pretrain {name} lr={lr}: {len(runs)} runs x {a.pt_steps} steps in {t_train:.1f}s "
          f"({imgs / t_train:.0f} img/s, {1e3 * t_train / a.pt_steps:.1f} ms/group-step)", flush=True)
    out["timing"].append({"stage": "pretrain", "model": name, "runs": len(runs), "steps": a.pt_steps,
                          "batch": a.pt_batch, "seconds": t_train})
    for (dp, arm, seed), e, l in zip(runs, err, loss[-20:].mean(0)):
      out["pretrain"].append({"model": name, "dp": dp, "arm": arm, "seed": seed, "error": float(e),
                              "final_loss": float(l)})
    if ft is None:
      continue
    # Fine-tune every pretrained run (and, with --scratch, a random init) on each Df.
    sources_ = [(r, p) for r in runs]
    fgd, fp = new_heads(name, gd, p, ft["classes"], rseeds)
    franks, fparams = [], []
    for df in dfs:
      for i, (dp, arm, seed) in enumerate(runs):
        franks.append((dp, arm, seed, df))
        fparams.append(jax.tree.map(lambda x: x[i], fp))
      if a.scratch:
        for seed in seeds:
          g0, p0 = init_params(name, ft["classes"], [seed])
          franks.append((0, "scratch", seed, df))
          fparams.append(jax.tree.map(lambda x: x[0], p0))
    fparams = jax.tree.map(lambda *x: jnp.stack(x), *fparams)
    order = np.stack([data_order(subsets.nested_subset(ft["labels"], df, purpose_seed(seed, "finetune/subset")),
                                 a.ft_steps, a.ft_batch, seed) for _, _, seed, df in franks])
    t0 = time.time()
    fparams, _ = train_group(fgd, fparams, ft["data"], order,
                             np.tile(lr_table(a.ft_lr, a.ft_steps, 0.1), (len(franks), 1)),
                             np.zeros(len(franks), np.float32), None)
    t_train = time.time() - t0
    ferr = evaluate(fgd, fparams, *ft["test"])
    print(f"finetune {name}: {len(franks)} runs x {a.ft_steps} steps in {t_train:.1f}s "
          f"({len(franks) * a.ft_steps * a.ft_batch / t_train:.0f} img/s)", flush=True)
    out["timing"].append({"stage": "finetune", "model": name, "runs": len(franks), "steps": a.ft_steps,
                          "batch": a.ft_batch, "seconds": t_train})
    for (dp, arm, seed, df), e in zip(franks, ferr):
      out["finetune"].append({"model": name, "dp": dp, "arm": arm, "seed": seed, "df": df, "error": float(e)})

  summarize(out)
  print(f"total {time.time() - t_start:.1f}s")
  if a.out:
    with open(a.out, "w") as f:
      json.dump(out, f, indent=1)


def from_records(path: str) -> dict:
  """A study's records.jsonl in this script's summary format."""
  out = {"teacher": None, "pretrain": [], "finetune": []}
  with open(path, encoding="utf-8") as f:
    for line in f:
      r = json.loads(line)
      row = {"model": r["model"], "dp": r["dp"], "arm": "distilled" if r["distilled"] else "plain",
             "seed": r["seed"], "error": r["eval_error"]}
      if r["cell_id"].startswith("teacher"):
        out["teacher"] = {"model": r["model"], "dp": r["dp"], "error": r["eval_error"]}
      elif r["stage"] == "pretrain":
        out["pretrain"].append(row)
      else:
        out["finetune"].append(dict(row, df=r["df"]))
  return out


def _paired(rows, key):
  """{key: (mean plain, mean distilled, mean diff, se diff)} over seeds (plain - distilled)."""
  by = {}
  for r in rows:
    by.setdefault(key(r), {}).setdefault(r["arm"], {})[r["seed"]] = r["error"]
  out = {}
  for k, arms in sorted(by.items()):
    pl, di = arms.get("plain", {}), arms.get("distilled", {})
    common = sorted(set(pl) & set(di))
    d = np.array([pl[s] - di[s] for s in common])
    out[k] = (np.mean(list(pl.values())) if pl else float("nan"),
              np.mean(list(di.values())) if di else float("nan"),
              d.mean() if len(d) else float("nan"),
              d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan"),
              np.std(list(pl.values()), ddof=1) if len(pl) > 1 else float("nan"))
  return out


def data_gain(rows, level=0.95):
  """{model: (dp_lo, dp_hi, mean drop, (ci lo, ci hi), seeds, mean final loss at dp_lo, at dp_hi)}: the
  plain arm's error drop E(dp_lo) - E(dp_hi) between its two largest Dp, paired by seed (a seed's
  subsets are nested), with a t interval over the seeds; None where fewer than 2 seeds pair."""
  from scipy import stats
  out = {}
  for m in dict.fromkeys(r["model"] for r in rows):
    plain = [r for r in rows if r["model"] == m and r["arm"] == "plain"]
    dps = sorted({r["dp"] for r in plain})
    if len(dps) < 2:
      continue
    lo, hi = dps[-2], dps[-1]
    at = {dp: {r["seed"]: r for r in plain if r["dp"] == dp} for dp in (lo, hi)}
    seeds = sorted(set(at[lo]) & set(at[hi]))
    d = np.array([at[lo][s]["error"] - at[hi][s]["error"] for s in seeds])
    if len(d) < 2:
      out[m] = None
      continue
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    loss = [np.mean([at[dp][s].get("final_loss", float("nan")) for s in seeds]) for dp in (lo, hi)]
    out[m] = (lo, hi, d.mean(), (d.mean() - half, d.mean() + half), len(d), *loss)
  return out


def summarize(out):
  if out["teacher"]:
    print(f"teacher error {out['teacher']['error']:.4f}")
  gains = data_gain(out["pretrain"])
  if gains:
    print("data still matters at the top (plain): model  Dp2 -> Dp1  E(Dp2) - E(Dp1) [95% t-CI over seeds]  "
          "final train loss at Dp2, Dp1")
  for m, g in gains.items():
    if g is not None:
      lo, hi, d, (a, b), n, l_lo, l_hi = g
      verdict = "falls" if a > 0 else ("rises" if b < 0 else "not resolved")
      print(f"  {m:<14} {lo:>6} -> {hi:<6} {d:+.4f} [{a:+.4f}, {b:+.4f}] n={n}  {verdict}  "
            f"loss {l_lo:.3f}, {l_hi:.3f}")
  print("pretrain error (mean over seeds): model dp plain distilled  diff(pl-di)+-SE  sd(plain)")
  for (m, dp), (pl, di, d, se, sd) in _paired(out["pretrain"], lambda r: (r["model"], r["dp"])).items():
    print(f"  {m:<14} {dp:>6} {pl:.4f} {di:.4f}  {d:+.4f}+-{se:.4f}  {sd:.4f}")
  if out["finetune"]:
    print("finetune error: model dp df plain distilled diff+-SE sd(plain)")
    rows = [r for r in out["finetune"] if r["arm"] != "scratch"]
    for (m, dp, df), (pl, di, d, se, sd) in _paired(rows, lambda r: (r["model"], r["dp"], r["df"])).items():
      print(f"  {m:<14} {dp:>6} {df:>5} {pl:.4f} {di:.4f}  {d:+.4f}+-{se:.4f}  {sd:.4f}")
    for r in out["finetune"]:
      if r["arm"] == "scratch":
        print(f"  scratch {r['model']} df={r['df']} seed={r['seed']}: {r['error']:.4f}")


if __name__ == "__main__":
  main(sys.argv[1:])
