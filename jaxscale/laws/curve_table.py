"""Laws on the points along runs' budgets: a curves.jsonl as a table of one row per point.

Choshen et al. (2024, "A Hitchhiker's Guide to Scaling Law Estimation") fit on intermediate
checkpoints after dropping the first ~10% of training. :func:`read_curves` gives each point of each
run a row: the run's columns (``stage, cell_id, model, params, dp, df, arm, ...``), the point's
(``step, examples, train_loss, eval_error, eval_loss, eval_count``) and ``frac`` (step / the run's
steps); points with ``frac`` below the burn-in are dropped. The points before a run's end are measured
on a fixed subset of the eval split, the last on the whole split (``eval_count`` says which).

The law with examples seen as an input, ``transfer_additive_seen``:
E = E_inf + A * Dp^-alpha + B * M^-beta + C * Df^-gamma + G * T^-delta, with T the examples seen
(``--inputs Dp=dp,M=params,Df=df,T=examples``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from jaxscale.config import check_burn_in
from jaxscale.errors import JaxscaleError
from jaxscale.laws import forms
from jaxscale.laws import table as table_lib

CURVE_LAW = "transfer_additive_seen"


def transfer_additive_seen(p, x):
  """E(Dp, M, Df, T) = E_inf + A Dp^-alpha + B M^-beta + C Df^-gamma + G T^-delta."""
  return forms.transfer_additive(p, x) + p["G"] * forms._pow(x["T"], p["delta"])


_EXP = dict(log=False, init=(0.1, 0.4, 0.8, 1.5), bounds=(0.0, 10.0))
_COEF = (1.0, float(np.exp(3.0)), float(np.exp(8.0)))

if CURVE_LAW not in forms.names():
  forms.register(forms.LawForm(
      name=CURVE_LAW, fn=transfer_additive_seen, inputs=("Dp", "M", "Df", "T"),
      params=(forms.Param("E_inf", init=lambda x, y: np.min(y) * np.array([0.05, 0.3, 0.7])),
              forms.Param("A", init=_COEF), forms.Param("alpha", **_EXP),
              forms.Param("B", init=_COEF), forms.Param("beta", **_EXP),
              forms.Param("C", init=_COEF), forms.Param("gamma", **_EXP),
              forms.Param("G", init=_COEF), forms.Param("delta", **_EXP)),
      formula="E = E_inf + A * Dp^-alpha + B * M^-beta + C * Df^-gamma + G * T^-delta",
      aliases={"M": ("N", "params"), "T": ("examples",)}))


def points(line: Mapping[str, Any], burn_in: float = 0.0) -> list[dict[str, Any]]:
  """The points of one curves.jsonl line at or after `burn_in` of its budget, in step order: each the
  line's run fields (all but ``points``) with the point's, and ``frac`` = step / the run's steps
  (kept when frac >= burn_in; the last point, frac = 1, is the run's final evaluation)."""
  run = {k: v for k, v in line.items() if k != "points"}
  steps = float(line["steps"])
  out = [{**run, **p, "frac": float(p["step"]) / steps} for p in line.get("points") or ()]
  return [p for p in out if p["frac"] >= burn_in]


def read_curves(path: str, burn_in: float = 0.0) -> table_lib.Table:
  """The points of a curves.jsonl as table rows (see the module doc); a row's line is its run's line."""
  check_burn_in(burn_in)
  table = table_lib.read_table(path)
  if "points" not in table or "steps" not in table:
    raise JaxscaleError(f"{path} has no 'points' and 'steps' columns: --curves reads a curves.jsonl "
                        "(written beside records.jsonl by jaxscale study)")
  runs = [k for k in table if k != table_lib.LINE]
  lines, rows = table_lib.lines(table), []
  for i in range(table_lib.n_rows(table)):
    rows += [(int(lines[i]), p) for p in points({k: table[k][i] for k in runs}, burn_in)]
  if not rows:
    raise JaxscaleError(f"no points of {path} are at or after --burn-in {burn_in:g} of their budget; "
                        "lower --burn-in")
  names = dict.fromkeys(k for _, r in rows for k in r)
  out = {n: table_lib._column([r.get(n) for _, r in rows]) for n in names}
  out[table_lib.LINE] = np.array([line for line, _ in rows], np.int64)
  return out
