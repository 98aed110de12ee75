"""Study analysis: the joint laws on synthetic records with a known crossing, the paired verdicts,
their rule on hand-made points, and the fits.json sections the analysis adds."""

import json

import numpy as np
import pytest
from scipy.optimize import brentq

from jaxscale.config import base_config
from jaxscale.errors import JaxscaleError
from jaxscale.laws import fit as fit_lib
from jaxscale.laws.uncertainty import percentile_ci
from jaxscale.study import analysis, law_selection, verdicts
from jaxscale.study.verdicts import Crossing, PairedPoint

MODELS = (("vit_tiny_xs", 50_000), ("vit_tiny_s", 200_000), ("vit_tiny_m", 800_000))
DPS, DFS, SEEDS = (250, 800, 2500, 8000), (100, 300, 1000), (0, 1, 2)


def plain(dp, m, df):
  return 0.03 + 6.0 * dp ** -0.4 + 30 * m ** -0.5 + 2 * df ** -0.5


def distilled(dp, m, df):
  return 0.05 + 1.0 * dp ** -0.2 + 30 * m ** -0.5 + 2 * df ** -0.5


def synthetic_rows(noise=0.01, seed=0):
  """Fine-tunes of both arms; a seed's two arms share their noise (paired seeds)."""
  rng = np.random.default_rng(seed)
  rows = []
  for model, m in MODELS:
    for dp in DPS:
      for df in DFS:
        for s in SEEDS:
          shared = noise * rng.normal()
          for arm, law in ((False, plain), (True, distilled)):
            e = law(dp, m, df) * np.exp(shared + 0.002 * rng.normal())
            rows.append(dict(stage="finetune", model=model, params=m, dp=dp, df=df, distilled=arm,
                             seed=s, eval_error=float(e), wall_s=1.0,
                             cell_id=f"{model}-{dp}-{df}-{s}-{arm}"))
  return rows


def study_config(bootstrap=0):
  c = base_config()
  c.study.update(models=tuple(m for m, _ in MODELS), dp=DPS, df=DFS, seeds=SEEDS, bootstrap=bootstrap)
  return c


@pytest.fixture(scope="module")
def analyzed():
  return analysis.analyze_records(study_config(bootstrap=30), synthetic_rows(), progress=False)


def test_boundary_matches_the_true_crossing(analyzed):
  m, df = 800_000, 100
  truth = brentq(lambda dp: plain(dp, m, df) - distilled(dp, m, df), 250, 8000)
  head = analyzed.fits["boundary"]
  assert head["at"] == {"M": m, "Df": df}
  assert len(head["roots"]) == 1
  assert head["roots"][0]["value"] == pytest.approx(truth, rel=0.1)
  assert head["roots"][0]["ci_low"] <= head["roots"][0]["value"] <= head["roots"][0]["ci_high"]
  assert head["sign_below"] == 1  # distillation helps at small Dp
  # one boundary per (M, Df) of the grid, the headline one first
  assert len(analyzed.fits["boundaries"]) == len(MODELS) * len(DFS)
  assert analyzed.fits["boundaries"][0]["roots"] == head["roots"]


def test_laws_pass_their_checks_and_fit_the_points(analyzed):
  assert set(analyzed.arms) == {"plain", "distilled"}
  for arm in analyzed.arms.values():
    assert arm.failed == () and arm.statistics["r2_log"] > 0.9
    assert arm.boot is not None and len(arm.boot["alpha"]) == 30
  bt = analyzed.fits["backtests"]["rows"]
  assert bt and all(r["log_rmse"] >= 0 for r in bt if r.get("error") is None)
  # every (arm, model, Df) gets a 1-D exponent; the plain arm's is the steeper one
  ex = analyzed.fits["exponents"]
  alphas = {arm: np.median([e["alpha"] for e in ex if e["arm"] == arm]) for arm in ("plain", "distilled")}
  assert alphas["plain"] > alphas["distilled"]


def test_paired_verdicts_follow_the_true_difference(analyzed):
  cells = [c for c in analyzed.paired if c.stage == "finetune"]
  assert len(cells) == len(MODELS) * len(DFS)
  for c in cells:
    m = c.params
    truth = [plain(dp, m, c.df) - distilled(dp, m, c.df) for dp in DPS]
    for p, t in zip(c.points, truth):
      assert p.n_pairs == len(SEEDS) and p.ci[0] <= p.mean_delta <= p.ci[1]
      assert p.mean_delta == pytest.approx(t, abs=0.01)
    # where the truth changes sign between two measured Dp, the verdict says so
    expect = "helps_below_dp_star" if truth[-1] < 0 else "helps_throughout"
    if c.verdict != "cannot_tell":
      assert c.verdict == expect, c.verdict_text
    if c.crossing is not None:
      root = brentq(lambda dp: plain(dp, m, c.df) - distilled(dp, m, c.df), DPS[0], DPS[-1])
      lo, hi = max(d for d in DPS if d < root), min(d for d in DPS if d > root)
      assert lo < c.crossing.dp_star < hi
  assert any(c.verdict == "helps_below_dp_star" for c in cells)


def test_fits_json_sections(analyzed, tmp_path):
  fits = analyzed.fits
  assert fits["schema_version"] == 2
  entry = fits["paired"][0]
  assert set(entry) >= {"model", "params", "df", "stage", "points", "crossing", "verdict", "verdict_text"}
  assert set(entry["points"][0]) == {"dp", "n_pairs", "mean_delta", "ci"}
  assert entry["verdict"] in verdicts.VERDICTS
  assert {e["stage"] for e in fits["paired"]} == {"finetune"}  # these records have no pretraining
  assert fits["law_check"]["plain"]["passed"] is True
  from jaxscale import laws
  laws.write_fits(str(tmp_path / "fits.json"), fits)
  assert json.loads((tmp_path / "fits.json").read_text())["paired"][0]["verdict"] == entry["verdict"]


def _points(*cis, n=4):
  return [PairedPoint(dp, n, (lo + hi) / 2, (lo, hi), ()) for dp, (lo, hi) in zip((100, 300, 1000, 3000), cis)]


@pytest.mark.parametrize("cis, cross, expect", [
    (((0.01, 0.05),) * 4, None, "helps_throughout"),
    (((-0.05, -0.01),) * 4, None, "hurts_throughout"),
    (((0.01, 0.05), (-0.01, 0.03), (-0.01, 0.01), (-0.05, -0.01)), Crossing(500, None, 0.9, True), "helps_below_dp_star"),
    (((-0.05, -0.01), (-0.01, 0.01), (-0.01, 0.01), (0.01, 0.05)), Crossing(500, None, 0.9, False), "hurts_below_dp_star"),
    # only one side of the crossing excludes 0
    (((0.01, 0.05), (-0.01, 0.03), (-0.02, 0.01), (-0.05, 0.001)), Crossing(500, None, 0.6, True), "cannot_tell"),
    # a point on the wrong side of Dp* excludes 0
    (((0.01, 0.05), (-0.03, -0.01), (0.01, 0.02), (-0.05, -0.01)), Crossing(200, None, 0.9, True), "cannot_tell"),
    # CIs include 0 everywhere
    (((-0.01, 0.05),) * 4, None, "cannot_tell"),
    # one Dp excluding 0 is not "throughout"
    (((0.01, 0.05), (-0.01, 0.05), (-0.01, 0.05), (-0.01, 0.05)), None, "cannot_tell"),
])
def test_verdict_rule(cis, cross, expect):
  assert verdicts.verdict(_points(*cis), cross) == expect


def test_too_few_pairs_cannot_tell():
  points = _points(*((0.01, 0.05),) * 4, n=verdicts.MIN_PAIRS - 1)
  assert verdicts.verdict(points, None) == "cannot_tell"
  text = verdicts.verdict_text("m", "cannot_tell", points, None, None)
  assert "fewer than" in text


def test_crossing_interpolates_in_log_dp():
  dp_star, helps_below = verdicts.first_crossing([100, 1000], np.array([0.1, -0.1]))
  assert dp_star == pytest.approx(np.sqrt(100 * 1000)) and helps_below
  assert verdicts.first_crossing([100, 1000], np.array([0.1, 0.2])) is None


def test_small_sample_ci_is_wider_than_the_percentile_interval():
  rng = np.random.default_rng(0)
  v = rng.normal(size=4)
  boot = v[rng.integers(0, 4, size=(2000, 4))].mean(axis=1)
  lo, hi = percentile_ci(boot)
  wlo, whi = verdicts.small_sample_ci(boot, v.mean(), 4)
  assert wlo < lo < v.mean() < hi < whi


def test_pretraining_records_give_the_pretraining_verdict_and_m_is_the_finetune_count():
  rows = [dict(stage="pretrain", model="vit_tiny_xs", params=62_308, dp=30000, df=0, distilled=False,
               seed=0, eval_error=0.1, cell_id="teacher-vit_tiny_xs-dp30000-s0")]
  for dp in (100, 1000):
    for s in range(4):
      for arm, e in ((False, 0.8), (True, 0.7 if dp == 100 else 0.9)):
        e += 0.001 * s
        rows.append(dict(stage="pretrain", model="vit_tiny_xs", params=62_308, dp=dp, df=0,
                         distilled=arm, seed=s, eval_error=e, cell_id=f"pt-{dp}-{arm}-{s}"))
        rows.append(dict(stage="finetune", model="vit_tiny_xs", params=60_250, dp=dp, df=50,
                         distilled=arm, seed=s, eval_error=e, cell_id=f"ft-{dp}-{arm}-{s}"))
  cells = {c.stage: c for c in verdicts.paired_cells(rows)}
  assert cells["pretrain"].verdict == "helps_below_dp_star" and cells["pretrain"].df == 0
  assert cells["pretrain"].params == 60_250  # M as fitted, from the fine-tune record
  teacher = [m for m in verdicts.measured_means(rows) if m.arm == "teacher"]
  assert len(teacher) == 1 and teacher[0].mean == 0.1


def test_too_few_records_is_a_one_line_error():
  rows = synthetic_rows()[:5]
  with pytest.raises(JaxscaleError, match="fine-tune records"):
    analysis.analyze_records(study_config(), rows, progress=False)


# ----------------------------------------------------------------------------- law selection, law check

def _additive(dp, m, df):
  return 0.03 + 6.0 * dp ** -0.4 + 30 * m ** -0.5 + 2 * df ** -0.5


def _multiplicative(dp, m, df):
  """A strong Dp x Df interaction, which the additive form cannot express."""
  return 0.03 + 30 * m ** -0.5 + (8 * dp ** -0.4 + 0.2) * df ** -0.3


def _one_arm_table(law, noise=0.01, seed=0):
  """Fine-tune columns of one arm (plain), two seeds per cell, errors from `law` with log noise."""
  rng = np.random.default_rng(seed)
  rows = [dict(dp=dp, params=m, df=df, distilled=False, model=name, seed=s,
               eval_error=law(dp, m, df) * np.exp(noise * rng.normal()))
          for name, m in MODELS for dp in DPS for df in DFS for s in (0, 1)]
  return {c: np.asarray([r[c] for r in rows]) for c in rows[0]}


@pytest.mark.parametrize("truth, expect", [(_additive, "transfer_additive"),
                                           (_multiplicative, "transfer_multiplicative")])
def test_auto_reports_the_form_the_data_came_from(truth, expect):
  c = study_config()
  c.study.law = law_selection.AUTO
  chosen, sel, bts = law_selection.select_law(c, _one_arm_table(truth), progress=False)
  assert chosen == expect, sel["reason"]
  assert sel["mode"] == "auto" and sel["chosen"] == expect and set(sel["forms"]) == set(law_selection.LAW_FORMS)
  other = next(f for f in law_selection.LAW_FORMS if f != expect)
  assert sel["forms"][expect]["mean_log_rmse"] < sel["forms"][other]["mean_log_rmse"]
  assert sel["forms"][expect]["chosen"] and not sel["forms"][other]["chosen"]
  # every input has >= 3 values, so each is held out once per form
  assert sorted(r["input"] for r in sel["forms"][expect]["backtests"]) == ["Df", "Dp", "M"]
  assert bts[expect]["law"] == expect


def test_choose_law_rule():
  a, m = law_selection.LAW_FORMS
  scores = {a: {("plain", "Dp"): 0.2, ("plain", "M"): 0.1, ("distilled", "Dp"): 0.3},
            m: {("plain", "Dp"): 0.1, ("plain", "M"): 0.15}}
  chosen, means, _ = law_selection.choose_law(scores, {a: {}, m: {}})
  # only the cases both forms ran count: (0.2 + 0.1) / 2 against (0.1 + 0.15) / 2
  assert chosen == m and means == {a: pytest.approx(0.15), m: pytest.approx(0.125)}
  tie = {a: {("plain", "Dp"): 0.1}, m: {("plain", "Dp"): 0.1}}
  assert law_selection.choose_law(tie, {a: {}, m: {}})[0] == a
  none = {a: {}, m: {}}
  chosen, means, why = law_selection.choose_law(none, {a: {"plain": 0.8}, m: {"plain": 0.9}})
  assert chosen == m and means == {a: None, m: None} and "no backtest" in why


def test_cell_r2_is_the_r2_of_the_seed_means():
  table = {"distilled": np.zeros(6, bool), "params": np.full(6, 10), "df": np.full(6, 10),
           "dp": np.array([1, 1, 2, 2, 4, 4]),
           "eval_error": np.array([1.0, 1.2, 0.5, 0.9, 0.3, 0.3])}
  params = dict(E_inf=0.1, A=1.0, alpha=1.0, B=0.0, beta=1.0, C=0.0, gamma=1.0)  # E = 0.1 + 1/Dp
  # by hand: cell means 1.1, 0.7, 0.3 against predictions 1.1, 0.6, 0.35
  ly = [np.log(1.1), np.log(0.7), np.log(0.3)]
  lp = [np.log(1.1), np.log(0.6), np.log(0.35)]
  mean = sum(ly) / 3
  hand = 1 - sum((y - p) ** 2 for y, p in zip(ly, lp)) / sum((y - mean) ** 2 for y in ly)
  r2, n = law_selection.cell_r2("transfer_additive", params, table)
  assert n == 3 and r2 == pytest.approx(hand, rel=1e-12)
  rows = fit_lib.r2_log(np.log(table["eval_error"]), np.log(0.1 + 1.0 / table["dp"]))
  assert rows < r2  # single runs carry the seed noise the means average out


GOOD_STATS = {"converged": True, "n_best_basin": 12, "r2_log": 0.8}
GOOD_PARAMS = {"E_inf": 0.01, "A": 1.0, "alpha": 0.3, "B": 2.0, "beta": 0.5, "C": 1.0, "gamma": 0.4}


def test_law_check_passes_a_good_law_and_uses_the_cell_r2():
  # the runs' R² (0.8) is below R2_MIN, but the check is made on the cell means
  assert law_selection.law_check(GOOD_STATS, GOOD_PARAMS, 0.95, {"Dp": 0.1, "M": 0.12}) == ()
  assert "cell means 0.85" in law_selection.law_check(GOOD_STATS, GOOD_PARAMS, 0.85, {"Dp": 0.1, "M": 0.1})[0]


@pytest.mark.parametrize("stats, params, holdouts, needle", [
    (GOOD_STATS, GOOD_PARAMS, {"Dp": 0.2, "M": 0.1}, "largest Dp held out: log-RMSE 0.200 > 0.15"),
    (GOOD_STATS, GOOD_PARAMS, {"Dp": 0.1, "M": 0.151}, "largest M held out: log-RMSE 0.151 > 0.15"),
    (GOOD_STATS, GOOD_PARAMS, {"Dp": 0.1}, "the largest M was not backtested"),
    ({**GOOD_STATS, "n_best_basin": 1}, GOOD_PARAMS, {"Dp": 0.1, "M": 0.1}, "only 1 start(s)"),
    ({**GOOD_STATS, "converged": False}, GOOD_PARAMS, {"Dp": 0.1, "M": 0.1}, "did not converge"),
    (GOOD_STATS, {**GOOD_PARAMS, "gamma": 24.1}, {"Dp": 0.1, "M": 0.1}, "exponent gamma = 24.1 outside"),
    (GOOD_STATS, {**GOOD_PARAMS, "beta": -0.1}, {"Dp": 0.1, "M": 0.1}, "exponent beta = -0.1 outside"),
])
def test_law_check_flags_each_failure(stats, params, holdouts, needle):
  reasons = law_selection.law_check(stats, params, 0.95, holdouts)
  assert len(reasons) == 1 and needle in reasons[0], reasons


def test_a_named_law_skips_selection(analyzed):
  sel = analyzed.fits["law_selection"]
  assert sel["mode"] == "given" and sel["chosen"] == "transfer_additive" == analyzed.law
  assert list(sel["forms"]) == ["transfer_additive"] and sel["forms"]["transfer_additive"]["chosen"]
  entry = sel["forms"]["transfer_additive"]
  assert set(entry) == {"formula", "arms", "backtests", "mean_log_rmse", "chosen"}
  assert set(entry["arms"]) == {"plain", "distilled"}
  assert set(entry["arms"]["plain"]) == {"r2_log_rows", "r2_log_cells", "n_rows", "n_cells", "converged",
                                         "n_best_basin", "params"}
  assert entry["arms"]["plain"]["n_cells"] == len(MODELS) * len(DPS) * len(DFS)
  check = analyzed.fits["law_check"]["plain"]
  assert check["r2_log_cells"] == analyzed.arms["plain"].r2_cells > check["r2_log_rows"] - 0.01
  assert {c["check"] for c in check["checks"]} >= {"backtest, largest Dp held out",
                                                   "backtest, largest M held out", "starts in the best basin"}


def test_an_unknown_law_is_a_one_line_error():
  c = study_config()
  c.study.law = "transfer_typo"
  with pytest.raises(JaxscaleError, match="use 'auto'"):
    analysis.analyze_records(c, synthetic_rows(), progress=False)
