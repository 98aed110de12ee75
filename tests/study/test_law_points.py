"""config.study.law_points: the study's law fitted on the fine-tunes' final errors ("final") or on every
point along their budgets after the burn-in, with examples seen T as an input ("curves"), on a synthetic
study whose curves follow a known law with a T term; and the settings' one-line refusals."""

import json
import os
import sys

import numpy as np
import pytest
from scipy.optimize import brentq

from jaxscale import cli, laws
from jaxscale.config import load, validate
from jaxscale.errors import JaxscaleError
from jaxscale.laws import uncertainty
from jaxscale.laws.curve_table import CURVE_LAW
from jaxscale.study import analysis, law_selection, records, runner
from jaxscale.report import sections

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "report"))
import synthetic  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
SMOKE = os.path.join(CONFIGS, "smoke.py")
# A smaller grid than the synthetic study's (every axis keeps 3 values, so Dp, M and Df are backtested).
MODELS, DPS, DFS, SEEDS = synthetic.MODELS[1:], synthetic.DPS[:3], synthetic.DFS, (0, 1)
G, DELTA, BATCH = 10.0, 0.6, 32   # the T term of both arms: G * T^-delta, T = images seen
RUNS = len(MODELS) * len(DPS) * len(DFS) * len(SEEDS)   # per arm
SEEN = synthetic.FT_STEPS * BATCH                       # every fine-tune's final T


def truth(arm, dp, m, df, t):
  return {"plain": synthetic.plain, "distilled": synthetic.distilled}[arm](dp, m, df) + G * t ** -DELTA


def study(noise=0.002, seed=0):
  """(records, curves.jsonl lines) of the fine-tunes: points at synthetic.CURVE_AT of FT_STEPS steps,
  each error the truth times log-normal noise; a run's last point is its record's error."""
  rng = np.random.default_rng(seed)
  rows, lines, steps = [], [], synthetic.FT_STEPS
  for model, m, _ in MODELS:
    for dp in DPS:
      for df in DFS:
        for s in SEEDS:
          for arm in ("plain", "distilled"):
            cid = f"ft-{model}-dp{dp}-{arm}-s{s}-df{df}"
            points = [{"step": round(f * steps), "examples": round(f * steps) * BATCH, "train_loss": 1.0,
                       "eval_error": truth(arm, dp, m, df, round(f * steps) * BATCH) * np.exp(noise * rng.normal()),
                       "eval_loss": 1.0, "eval_count": 256 if f < 1 else 5000} for f in synthetic.CURVE_AT]
            row = synthetic._row("finetune", model, m, dp, df, arm, s, points[-1]["eval_error"], cid, steps)
            rows.append({**row, "batch_size": BATCH, "arm": arm})
            lines.append({"stage": "finetune", "cell_id": cid, "model": model, "params": m, "dp": dp, "df": df,
                          "arm": arm, "selection": "random", "distilled": arm == "distilled", "seed": s,
                          "steps": steps, "batch_size": BATCH, "points": points})
  return rows, lines


def study_config(law_points="curves", bootstrap=0):
  c = synthetic.config(bootstrap)
  c.study.update(models=tuple(m for m, _, _ in MODELS), dp=DPS, df=DFS, seeds=SEEDS, law_points=law_points)
  return validate(c)


def write_workdir(path, config, rows, lines):
  os.makedirs(path, exist_ok=True)
  where = records.workdir_paths(str(path))
  with open(where["study"], "w") as f:
    json.dump({"hash": "synthetic", "config": config.to_dict()}, f, default=str)
  for name, items in (("records", rows), ("curves", lines)):
    with open(where[name], "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in items)
  return where


@pytest.fixture(scope="module")
def curves_study(tmp_path_factory):
  """The study analysed with law_points "curves" (analyze_study: fits.json written), fits.json, and the
  number of clusters each bootstrap resampled."""
  config = study_config(bootstrap=8)
  where = write_workdir(tmp_path_factory.mktemp("curves"), config, *study())
  counts, bootstrap = [], uncertainty.bootstrap

  def counting(*args, clusters=None, **kw):
    counts.append(len(np.unique(clusters if clusters is not None else uncertainty.cluster_ids(args[1]))))
    return bootstrap(*args, clusters=clusters, **kw)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(uncertainty, "bootstrap", counting)
    result = analysis.analyze_study(config, os.path.dirname(where["records"]), progress=False)
  with open(where["fits"]) as f:
    return result, json.load(f), counts


def test_the_points_table_is_the_final_table_plus_the_points_after_the_burn_in():
  rows, lines = study()
  final = law_selection.finetune_table(rows, seen=True)
  for burn_in, per_run in ((0.1, 4), (0.3, 3), (0.5, 2), (0.0, 4)):
    table = law_selection.points_table(rows, lines, burn_in)
    assert len(table["dp"]) == 2 * RUNS * per_run and table["final"].sum() == 2 * RUNS
    back = law_selection.final_rows(table)
    assert all(np.array_equal(back[c], final[c]) for c in final) and set(back["examples"]) == {SEEN}
    early = {int(t) for t, f in zip(table["examples"], table["final"]) if not f}
    assert min(early) / SEEN >= burn_in and max(early) < SEEN
  # a teacher's, a diverged or a pruned run is not in the records analysed, so its curve is not either
  kept = [r for r in rows if r["dp"] != DPS[0]]
  assert len(law_selection.points_table(kept, lines, 0.1)["dp"]) == 2 * RUNS * 4 * 2 // 3


def test_curves_recover_the_law_with_examples_seen(curves_study):
  result, fits, clusters = curves_study
  assert result.law == CURVE_LAW == fits["law"]
  sel = fits["law_selection"]
  assert sel["law_points"] == "curves" and sel["burn_in"] == 0.1 and sel["mode"] == "only"
  assert result.selection.law_points == "curves" and list(sel["forms"]) == [CURVE_LAW]
  alphas = {"plain": 0.5, "distilled": 0.3}
  for arm, f in result.arms.items():
    assert f.failed == (), f.failed
    assert f.statistics["n"] == RUNS * len(synthetic.CURVE_AT)   # every point: 0.1 is kept
    assert f.params["delta"] == pytest.approx(DELTA, abs=0.03)
    assert f.params["G"] == pytest.approx(G, rel=0.2)
    assert f.params["alpha"] == pytest.approx(alphas[arm], abs=0.03)
    for name in ("beta", "gamma"):
      assert f.params[name] == pytest.approx(0.5, abs=0.1)
    assert f.boot is not None and len(f.boot["delta"]) == 8
  # the bootstrap resamples cells (a cell's seeds and all their points), not single points
  assert clusters == [RUNS // len(SEEDS)] * 2
  for arm, f in result.arms.items():
    # R² of the cell means: the final errors, one cell per (M, Dp, Df) at its final T
    assert fits["law_selection"]["forms"][CURVE_LAW]["arms"][arm]["n_cells"] == RUNS // len(SEEDS)
    assert {c["check"] for c in f.checks} >= {"exponent delta", "R² (log) of the cell means"}


def test_backtests_and_boundaries_are_read_on_the_final_errors(curves_study):
  result, fits, _ = curves_study
  rows = {(r["arm"], r["input"]): r for r in fits["backtests"]["rows"]}
  assert set(rows) == {(a, i) for a in ("plain", "distilled") for i in ("Dp", "M", "Df")}
  for (arm, name), r in rows.items():
    held = RUNS // 3   # each input has 3 values
    assert r["n_test"] == held and r["n_points"] == held // len(SEEDS)   # the held-out runs' final errors, cells
    assert r["n_train"] == (RUNS - held) * len(synthetic.CURVE_AT)       # every point of the other runs
    assert r["log_rmse"] < 0.05 and r["passed"]
  m, df = max(p for _, p, _ in MODELS), min(DFS)
  head = fits["boundary"]
  assert head["at"] == {"M": m, "Df": df, "T": pytest.approx(SEEN)}
  assert fits["boundaries"][0]["T"] == pytest.approx(SEEN)
  dp_star = brentq(lambda dp: truth("plain", dp, m, df, SEEN) - truth("distilled", dp, m, df, SEEN), 160, 4000)
  assert head["roots"][0]["value"] == pytest.approx(dp_star, rel=0.1)
  # the report says what the law was fitted on, where it names it
  text = " ".join(b[1] for b in sections.law_blocks(result) if b[0] == "p")
  n = 2 * RUNS * len(synthetic.CURVE_AT)
  assert f"It was fitted on {n:,} curve points after burn-in 0.1" in text


def test_final_points_fit_the_records_as_before():
  rows, lines = study()
  config = study_config("final")
  config.study.law = "transfer_additive"
  result = analysis.analyze_records(config, rows, progress=False, curves=lines)
  sel = result.fits["law_selection"]
  assert sel["law_points"] == "final" and sel["burn_in"] is None and result.law == "transfer_additive"
  table = law_selection.finetune_table(rows)
  direct = laws.analyze(table, law="transfer_additive", inputs=law_selection.INPUTS, target="eval_error",
                        split_by="distilled", floor=law_selection.ERROR_FLOOR, seed=int(config.seed),
                        progress=False)
  for key, arm in law_selection.ARMS.items():
    assert result.arms[arm].statistics["n"] == RUNS
    assert result.arms[arm].params == {n: p["value"] for n, p in direct.content["groups"][key]["params"].items()}
  assert "T" not in result.fits["boundary"]["at"] and "curve points" not in " ".join(
      b[1] for b in sections.law_blocks(result) if b[0] == "p")


@pytest.mark.parametrize("overrides, needle", [
    (["--config.study.law_points=all"], "config.study.law_points must be one of 'final', 'curves'"),
    (["--config.study.burn_in=1.0"], "config.study.burn_in must be a fraction of the budget in [0, 1)"),
    (["--config.study.law_points=curves", "--config.study.law=auto", "--config.finetune.eval_at=(0.05,1.0)"],
     "config.finetune.eval_at (0.05, 1.0) has none at or after config.study.burn_in=0.1"),
    (["--config.study.law_points=curves"], "config.study.law 'transfer_additive' has no T"),
])
def test_a_bad_law_points_setting_is_one_line(tmp_path, capsys, overrides, needle):
  code = cli.main(["study", "--config", SMOKE, "--workdir", str(tmp_path / "w"), "--dry-run", *overrides])
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("jaxscale: error: ") and err.count("\n") == 1, err
  assert needle in err and not (tmp_path / "w").exists()


def test_the_curve_law_passes_the_law_checks_where_the_grid_allows_it():
  runner.check_law(load(os.path.join(CONFIGS, "default.py"), ["--config.study.law_points=curves"]))
  with pytest.raises(JaxscaleError, match="has no T; set config.study.law to 'auto' or transfer_additive_seen"):
    law_selection.law_candidates("transfer_multiplicative", "curves")
  assert law_selection.law_candidates("auto", "curves") == (CURVE_LAW,)
  assert law_selection.law_candidates("auto") == law_selection.LAW_FORMS


@pytest.mark.parametrize("curves", ["none", "no file"])
def test_curves_without_curve_points_are_one_line(tmp_path, capsys, curves):
  rows, lines = study()
  where = write_workdir(tmp_path / "w", study_config(), rows, [] if curves == "none" else lines)
  if curves == "no file":
    os.remove(where["curves"])
  assert cli.main(["report", "--workdir", str(tmp_path / "w")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "curves.jsonl has none at or after config.study.burn_in=0.1" in err, err
  assert not os.path.exists(where["fits"])
