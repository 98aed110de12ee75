"""The report's learning curves (study.curves): seed means with bands at the smallest and largest Dp per
arm, and the budget check's sentence and flags, on synthetic curves whose answer is known."""

import numpy as np
import pytest

from jaxscale.study import curves


def _run(model, dp, arm, seed, errors, steps=100, batch=10):
  fracs = (0.1, 0.3, 0.7, 1.0)
  return {"stage": "pretrain", "model": model, "dp": dp, "df": 0, "arm": arm, "seed": seed, "steps": steps,
          "points": [{"step": int(f * steps), "examples": int(f * steps) * batch, "eval_error": e}
                     for f, e in zip(fracs, errors)]}


def _study(late_drop, early_drop=None, seeds=4, noise=0.002):
  rng = np.random.default_rng(0)
  early_drop = late_drop if early_drop is None else early_drop
  rows = []
  for seed in range(seeds):
    for dp in (100, 1000, 4000):
      for arm in ("plain", "distilled"):
        e = 0.3 + np.array([0.6, early_drop + late_drop, late_drop, 0.0]) + rng.normal(0, noise, 4)
        rows.append(_run("m", dp, arm, seed, list(e)))
  return rows


def test_figure_curves_are_seed_means_with_bands_at_the_ends_of_dp():
  got = curves.figure_curves(_study(0.1))["m"]
  assert got["dp"] == [100, 4000] and set(got["curves"]) == {(d, a) for d in (100, 4000)
                                                              for a in ("plain", "distilled")}
  c = got["curves"][(4000, "plain")]
  assert c["examples"] == [100, 300, 700, 1000] and c["seeds"] == 4
  rows = [r for r in _study(0.1) if r["dp"] == 4000 and r["arm"] == "plain"]
  assert c["mean"][-1] == pytest.approx(np.mean([r["points"][-1]["eval_error"] for r in rows]))
  assert all(lo < m < hi for lo, m, hi in zip(c["low"], c["mean"], c["high"]))


def test_budget_check_flags_a_binding_budget_a_flat_one_and_neither():
  binds = curves.budget_check(_study(0.1), margin=0.03)["m"]
  assert binds["flag"] == "binds" and binds["drop"] == pytest.approx(0.1, abs=0.005)
  assert binds["text"].startswith(f"m: at the largest Dp (4000) the plain error fell by {binds['drop']:.3f} (95% CI")
  assert "over the last 30% of the budget" in binds["text"] and "the budget binds" in binds["text"]
  flat = curves.budget_check(_study(0.0, early_drop=0.0), margin=0.03)["m"]
  assert flat["flag"] == "flat" and "far longer than needed" in flat["text"]
  middle = curves.budget_check(_study(0.01, early_drop=0.1), margin=0.03)["m"]
  assert middle["flag"] == ""
  noisy = curves.budget_check(_study(0.05, seeds=3, noise=0.1), margin=0.03)["m"]   # noise: no verdict
  assert noisy["flag"] == "" and noisy["ci"][0] < 0.03


def test_budget_check_without_a_late_enough_point_says_so():
  rows = [dict(r, points=[r["points"][-1]]) for r in _study(0.1)]
  assert curves.budget_check(rows, margin=0.03)["m"]["flag"] == "no points"
