"""A small synthetic study workdir (study.json + records.jsonl) shaped like the default study
(configs/default.py: its models with M as fitted on the 20 downstream classes, its Dp, Df, its first
three seeds, datasets and fixed step budgets), so the documented commands run on it stay inside its data.

Errors follow known laws so tests can check what the analysis and the report say:

  plain:     E = 0.05 + 8.0 Dp^-0.5 + 30 M^-0.5 + 2 Df^-0.5
  distilled: E = 0.10 + 1.2 Dp^-0.3 + 30 M^-0.5 + 2 Df^-0.5

so ΔE = E_plain − E_distilled is +0.321 and +0.071 at Dp = 160 and 800, −0.023 and −0.053 at
4,000 and 16,000: distillation helps below a Dp* between 800 and 4,000 and hurts above, in every
(M, Df).
Both arms of a seed share most of their noise (paired seeds), so the paired CIs are narrow.
`flat=True` gives a study whose fine-tune errors do not follow the law (a failed fit).
The study's law is "auto" (both transfer forms fitted; the additive one, the truth, should be reported).
"""

import json
import os

import numpy as np

from jaxscale.config import base_config

# (name, M as fitted with the 20-class downstream head, parameters with the 52-class glyph head)
MODELS = (("vit_tiny_xxs", 7_972, 8_516), ("vit_tiny_xs", 16_556, 17_356), ("vit_tiny_s", 28_212, 29_268), ("vit_tiny_m", 60_740, 62_308))
DPS, DFS, SEEDS = (160, 800, 4000, 16000), (100, 300, 1000), (0, 1, 2)
PT_STEPS, FT_STEPS = 3200, 150
TEACHER_ERROR = 0.615


def plain(dp, m, df):
  return 0.05 + 8.0 * dp ** -0.5 + 30 * m ** -0.5 + 2 * df ** -0.5


def distilled(dp, m, df):
  return 0.10 + 1.2 * dp ** -0.3 + 30 * m ** -0.5 + 2 * df ** -0.5


def config(bootstrap=20):
  c = base_config()
  c.pretrain.dataset = "jaxscale_glyphs/16px_30k"
  c.finetune.dataset = "jaxscale_symbols/16px"
  c.pretrain.optim.update(batch_size=32, min_steps=PT_STEPS, max_steps=PT_STEPS, epochs=1.0)
  c.finetune.optim.update(batch_size=32, min_steps=FT_STEPS, max_steps=FT_STEPS, epochs=1.0)
  c.study.update(models=tuple(m for m, _, _ in MODELS), dp=DPS, df=DFS, seeds=SEEDS,
                 teacher_model="vit_tiny_xxs", teacher_dp=30000, bootstrap=bootstrap, law="auto")
  return c


def _row(stage, model, params, dp, df, arm, seed, error, cell_id, steps):
  return dict(stage=stage, model=model, params=params, dp=dp, df=df, distilled=arm == "distilled",
              teacher="vit_tiny_xxs" if arm == "distilled" else "", seed=seed, steps=steps,
              eval_error=float(error), eval_loss=1.0, eval_count=5000 if stage == "finetune" else 2600,
              wall_s=1.0, cell_id=cell_id)


def rows(flat=False, seed=0):
  """The records of the synthetic study: 1 teacher, 96 pretraining and 288 fine-tune runs."""
  rng = np.random.default_rng(seed)
  out = [_row("pretrain", "vit_tiny_xxs", 8_516, 30000, 0, "plain", 0, TEACHER_ERROR,
              "teacher-vit_tiny_xxs-dp30000-s0", PT_STEPS)]
  laws = {"plain": plain, "distilled": distilled}
  for model, m, m_pre in MODELS:
    for dp in DPS:
      for s in SEEDS:
        shared = 0.03 * rng.normal()
        for arm in ("plain", "distilled"):
          e = 0.1 + laws[arm](dp, m, 1000) * np.exp(shared + 0.005 * rng.normal())
          out.append(_row("pretrain", model, m_pre, dp, 0, arm, s, min(e, 0.98),
                          f"pt-{model}-dp{dp}-{arm}-s{s}", PT_STEPS))
        for df in DFS:
          shared = 0.03 * rng.normal()
          for arm in ("plain", "distilled"):
            e = laws[arm](dp, m, df) * np.exp(shared + 0.005 * rng.normal())
            if flat:
              e = 0.6 + 0.05 * rng.normal() - (0.3 if dp == DPS[-1] else 0.0)
            out.append(_row("finetune", model, m, dp, df, arm, s, e,
                            f"ft-{model}-dp{dp}-{arm}-s{s}-df{df}", FT_STEPS))
  return out


def write_study(workdir, flat=False, bootstrap=20):
  """Writes study.json and records.jsonl into `workdir`; returns the config."""
  c = config(bootstrap)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "study.json"), "w") as f:
    json.dump({"hash": "synthetic", "config": c.to_dict()}, f, default=str)
  recs = rows(flat)
  with open(os.path.join(workdir, "records.jsonl"), "w") as f:
    for r in recs:
      f.write(json.dumps(r) + "\n")
  with open(os.path.join(workdir, "curves.jsonl"), "w") as f:
    for r in recs:
      if r["stage"] == "pretrain":
        f.write(json.dumps(curve(r)) + "\n")
  return c


CURVE_AT = (0.1, 0.3, 0.7, 1.0)


def curve(record):
  """A pretraining run's curves.jsonl line: the error falls from 0.95 to the record's final error
  as (1 - fraction)^2, so the last 30% of the budget lowers it by 9% of that range; the last point
  is the record's own."""
  final, steps = record["eval_error"], record["steps"]
  points = [{"step": round(f * steps), "examples": round(f * steps) * 32, "train_loss": 1.0,
             "eval_error": final + (0.95 - final) * (1 - f) ** 2, "eval_loss": 1.0,
             "eval_count": 256 if f < 1 else record["eval_count"]} for f in CURVE_AT]
  arm = "distilled" if record["distilled"] else "plain"
  return {"stage": "pretrain", "cell_id": record["cell_id"], "model": record["model"],
          "params": record["params"], "dp": record["dp"], "df": 0, "arm": arm, "selection": "random",
          "distilled": record["distilled"], "seed": record["seed"], "steps": steps, "batch_size": 32,
          "points": points}
