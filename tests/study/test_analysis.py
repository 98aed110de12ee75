"""Study analysis: the joint laws on synthetic records with a known crossing, the paired verdicts,
their rule on hand-made points, and the fits.json sections the analysis adds."""

import json

import numpy as np
import pytest
import scipy.stats
from scipy.optimize import brentq

from jaxscale.config import base_config
from jaxscale.errors import JaxscaleError
from jaxscale.laws import fit as fit_lib
from jaxscale.laws.uncertainty import percentile_ci
from jaxscale.study import analysis, law_selection, verdicts

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
      # a decided point says what the truth is (margin 0.03)
      assert {"helps": t > 0, "hurts": t < 0, "no_practical_difference": abs(t) <= 0.03,
              "undecided": True}[p.verdict], (p, t)
    # where the truth changes sign between two measured Dp, the verdict says so
    assert c.verdict in ("helps_below_dp_star", "helps", "cannot_tell"), c.verdict_text
    if c.crossing is not None:
      assert c.verdict == "helps_below_dp_star"
      root = brentq(lambda dp: plain(dp, m, c.df) - distilled(dp, m, c.df), DPS[0], DPS[-1])
      lo, hi = max(d for d in DPS if d < root), min(d for d in DPS if d > root)
      assert lo < c.crossing.dp_star < hi
  assert any(c.verdict == "helps_below_dp_star" for c in cells)
  rule = analyzed.fits["decision_rule"]
  assert rule["family_points"] == len(MODELS) * len(DPS) * (len(DFS) + 1) and rule["rounds"] == 1
  # Benjamini-Hochberg: helps / hurts at q·k/m, k the points that differ; the floor is Bonferroni's
  assert rule["decided_differ"] > 0 and rule["bonferroni_alpha"] == pytest.approx(0.05 / rule["family_points"])
  assert rule["point_alpha"] == pytest.approx(0.05 * rule["decided_differ"] / rule["family_points"])
  decided = sum(p.verdict in ("helps", "hurts") for c in cells for p in c.points)
  assert decided == rule["decided_differ"]


def test_fits_json_sections(analyzed, tmp_path):
  fits = analyzed.fits
  assert fits["schema_version"] == 2
  entry = fits["paired"][0]
  assert set(entry) >= {"comparison", "model", "params", "df", "stage", "points", "crossing", "verdict",
                        "decided_dp", "n_runs", "n_diverged", "verdict_text"}
  assert set(entry["points"][0]) == {"dp", "n_pairs", "mean_delta", "ci", "verdict", "pairs_needed"}
  assert {e["comparison"] for e in fits["paired"]} == {"distilled_vs_plain"}
  assert fits["diverged"] == [] and set(fits["decision_rule"]["pairs_needed"]) >= {"pairs", "runs", "minutes"}
  assert entry["verdict"] in verdicts.VERDICTS
  assert {e["stage"] for e in fits["paired"]} == {"finetune"}  # these records have no pretraining
  assert fits["law_check"]["plain"]["passed"] is True
  from jaxscale import laws
  laws.write_fits(str(tmp_path / "fits.json"), fits)
  assert json.loads((tmp_path / "fits.json").read_text())["paired"][0]["verdict"] == entry["verdict"]


@pytest.mark.parametrize("ci, n, expect", [
    ((0.001, 0.2), 4, "helps"), ((-0.2, -0.001), 4, "hurts"),
    ((-0.02, 0.02), 4, "no_practical_difference"),
    ((-0.03, 0.03), 4, "no_practical_difference"),   # exactly at ±δ: inside (ends included)
    ((-0.03, 0.0300001), 4, "undecided"),           # just past +δ
    ((-0.0300001, 0.01), 4, "undecided"),           # just past −δ
    ((0.0, 0.02), 4, "no_practical_difference"),    # touching 0 is not above it
    ((0.001, 0.02), 4, "helps"),                    # above 0 comes first, even inside ±δ
    ((0.01, 0.05), 2, "undecided"),                 # fewer than MIN_PAIRS pairs
    (None, 1, "undecided"),
])
def test_point_verdict_rule(ci, n, expect):
  assert verdicts.point_verdict(ci, n, 0.03) == expect


def test_judge_point_on_synthetic_pairs():
  rng = np.random.default_rng(0)
  alpha = 0.05 / 64
  assert verdicts.judge_point(0.2 + 0.01 * rng.normal(size=6), 0.03, alpha)[2] == "helps"
  assert verdicts.judge_point(-0.2 + 0.01 * rng.normal(size=6), 0.03, alpha)[2] == "hurts"
  assert verdicts.judge_point(0.002 * rng.normal(size=8), 0.03, alpha)[2] == "no_practical_difference"
  mean, ci, v, need = verdicts.judge_point([0.05, -0.02, 0.09, 0.01], 0.03, alpha)
  assert v == "undecided" and need is not None and need > 0
  # the estimate is the first N whose interval decides: one pair fewer would not
  sd = np.std([0.05, -0.02, 0.09, 0.01], ddof=1)
  h = lambda n: scipy.stats.t.ppf(1 - alpha / 2, n - 1) * sd / np.sqrt(n)
  n = 4 + need
  assert abs(mean) > h(n) or abs(mean) + h(n) <= 0.03
  assert not (abs(mean) > h(n - 1) or abs(mean) + h(n - 1) <= 0.03)
  # the t-interval: mean ± t·s/√n
  lo, hi = verdicts.t_interval([1.0, 2.0, 3.0], 0.05)
  assert (lo + hi) / 2 == pytest.approx(2.0) and hi - 2.0 == pytest.approx(scipy.stats.t.ppf(0.975, 2) / np.sqrt(3))


def test_pvalues_agree_with_the_intervals():
  """p_diff < alpha exactly when the t-interval at alpha excludes 0; p_equiv <= alpha exactly when
  it lies inside ±margin (random points, several levels)."""
  rng = np.random.default_rng(3)
  for _ in range(300):
    d = rng.normal(rng.uniform(-0.06, 0.06), rng.uniform(0.005, 0.05), size=int(rng.integers(3, 12)))
    p_diff, p_equiv = verdicts.point_pvalues(d, 0.03)
    for alpha in (0.05, 0.01, 0.05 / 128):
      lo, hi = verdicts.t_interval(d, alpha)
      if abs(p_diff - alpha) > 1e-9:
        assert (p_diff < alpha) == (lo > 0 or hi < 0)
      if abs(p_equiv - alpha) > 1e-9:
        assert (p_equiv <= alpha) == (-0.03 <= lo and hi <= 0.03)
  assert verdicts.point_pvalues([0.1, 0.2], 0.03) == (1.0, 1.0)      # below MIN_PAIRS


def test_benjamini_hochberg_level():
  # m = 10, q = 0.05: thresholds 0.005, 0.010, 0.015, ...; the largest k with p_(k) <= q·k/m is 3
  p = [0.001, 0.008, 0.012, 0.5, 0.9]
  assert verdicts.bh_level(p, 10, 0.05) == (pytest.approx(0.015), 3)
  # nothing rejected: the Bonferroni level q/m
  assert verdicts.bh_level([0.2, 0.4], 10, 0.05) == (pytest.approx(0.005), 0)
  # a step-up rule: a small p late in the order still counts once a later one passes
  assert verdicts.bh_level([0.004, 0.006, 0.011, 0.0199], 4, 0.05)[1] == 4


def test_study_levels_no_effect_keeps_bonferroni_real_effects_widen():
  rng = np.random.default_rng(0)
  rule = verdicts.FamilyRule(64)
  # no effect: a study with any helps / hurts is a false claim; BH keeps that near q = 0.05
  any_claim = 0
  for _ in range(300):
    null = [0.04 * rng.normal(size=4) for _ in range(64)]
    lv = verdicts.study_levels(null, 0.03, rule)
    assert lv.diff == pytest.approx(0.05 * max(lv.n_diff, 1) / 64)
    any_claim += lv.n_diff > 0
  assert any_claim / 300 <= 0.08     # 5% nominal; 0.08 is over 2 SE above it
  assert verdicts.study_levels([np.zeros(4) + 1e-3 * np.arange(4)] * 3, 0.03, rule).n_diff == 0
  strong = [0.2 + 0.02 * rng.normal(size=6) for _ in range(32)] + null[:32]
  lv = verdicts.study_levels(strong, 0.03, rule)
  assert lv.n_diff >= 32 and lv.diff == pytest.approx(0.05 * lv.n_diff / 64)
  # the looks split the rate: two rounds halve each family's q
  assert verdicts.study_levels(strong, 0.03, verdicts.FamilyRule(64, 2)).diff <= lv.diff / 2 + 1e-12
  # every point with p_diff at or below the level is a helps / hurts point at that level
  _, judged = verdicts.judge_points(strong, 0.03, rule)
  assert sum(j[2] in ("helps", "hurts") for j in judged) == lv.n_diff


def test_a_point_exactly_at_the_margin_is_no_practical_difference():
  # deltas whose t-interval ends exactly at ±δ
  alpha, d = 0.05, np.array([-1.0, 0.0, 1.0])
  h = scipy.stats.t.ppf(1 - alpha / 2, 2) * 1.0 / np.sqrt(3)
  lo, hi = verdicts.t_interval(d, alpha)
  assert verdicts.point_verdict((lo, hi), 3, h) == "no_practical_difference"
  assert verdicts.point_verdict((lo, hi), 3, h * (1 - 1e-9)) == "undecided"


@pytest.mark.parametrize("points, expect, decided", [
    (["helps"] * 4, "helps", (0, 1, 2, 3)),
    (["hurts", "undecided", "hurts", "undecided"], "hurts", (0, 2)),
    (["no_practical_difference"] * 4, "no_practical_difference", (0, 1, 2, 3)),
    (["helps", "undecided", "hurts", "hurts"], "helps_below_dp_star", (0, 2, 3)),
    (["helps", "helps", "no_practical_difference", "undecided"], "helps_below_dp_star", (0, 1, 2)),
    (["hurts", "helps"], "hurts_below_dp_star", (0, 1)),
    (["helps", "no_practical_difference", "hurts", "hurts"], "helps_below_dp_star", (0, 1, 2, 3)),
    (["hurts", "no_practical_difference", "undecided", "helps"], "hurts_below_dp_star", (0, 1, 3)),
    (["helps", "hurts", "helps", "undecided"], "cannot_tell", (0, 1, 2)),   # three phases
    (["no_practical_difference", "helps"], "cannot_tell", (0, 1)),          # not a boundary's shape
    (["undecided"] * 4, "cannot_tell", ()),
    # a crossing needs decided points on both sides: one side only is that side's verdict
    (["helps", "undecided", "undecided", "undecided"], "helps", (0,)),
])
def test_cell_rule(points, expect, decided):
  assert verdicts.judge_cell(points) == (expect, decided)


def _pair_rows(deltas_by_dp, arms=("plain", "distilled"), df=50, stage="finetune"):
  rows = []
  for dp, deltas in deltas_by_dp.items():
    for s, d in enumerate(deltas):
      for arm in arms:
        e = 0.5 + (0.0 if arm == "distilled" else d if arm == "plain" else d / 2)
        rows.append(dict(stage=stage, model="vit_tiny_xs", params=60_000, dp=dp, df=df, arm=arm,
                         distilled=arm == "distilled", seed=s, eval_error=e, wall_s=2.0,
                         diverged_at=None, cell_id=f"{stage}-{dp}-{arm}-{s}"))
  return rows


def test_dp_star_is_given_only_for_a_crossing():
  rng = np.random.default_rng(1)
  cross = _pair_rows({100: 0.1 + 0.002 * rng.normal(size=6), 1000: -0.1 + 0.002 * rng.normal(size=6)})
  c, = verdicts.paired_cells(cross, margin=0.03)
  assert c.verdict == "hurts_below_dp_star" or c.verdict == "helps_below_dp_star"
  assert c.crossing is not None and 100 < c.crossing.dp_star < 1000 and "Dp*" in c.verdict_text
  # no effect: the means may well change sign, but no Dp* is stated
  null = _pair_rows({100: 0.05 * rng.normal(size=3), 1000: 0.05 * rng.normal(size=3)})
  c, = verdicts.paired_cells(null, margin=0.03)
  assert c.verdict == "cannot_tell" and c.crossing is None and c.fraction_crossing is None
  assert "Dp*" not in c.verdict_text and "more seed pairs needed" in c.verdict_text


def test_the_smoothed_arm_gives_the_teacher_knowledge_comparison():
  rng = np.random.default_rng(2)
  rows = _pair_rows({100: 0.1 + 0.002 * rng.normal(size=5), 1000: 0.1 + 0.002 * rng.normal(size=5)},
                    arms=("plain", "distilled", "smoothed"))
  cells = {c.comparison: c for c in verdicts.paired_cells(rows, margin=0.03)}
  assert set(cells) == {"distilled_vs_plain", "distilled_vs_smoothed"}
  # plain − distilled = d, smoothed − distilled = d / 2
  p, s = cells["distilled_vs_plain"], cells["distilled_vs_smoothed"]
  assert p.points[0].mean_delta == pytest.approx(2 * s.points[0].mean_delta)
  assert "teacher's knowledge" in s.verdict_text and "distillation" in p.verdict_text
  # the laws are fitted on plain and distilled only
  assert set(law_selection.finetune_table(rows)["distilled"].tolist()) == {True, False}
  assert len(law_selection.finetune_table(rows)["dp"]) == 2 * 2 * 5


def test_diverged_runs_are_left_out_and_a_cell_with_many_cannot_be_judged():
  rows = _pair_rows({100: [0.1, 0.11, 0.09, 0.1], 1000: [-0.1, -0.11, -0.09, -0.1]})
  for r in rows[:5]:
    r["diverged_at"] = 7
  cells = verdicts.paired_cells([r for r in rows if r["diverged_at"] is None], margin=0.03,
                                diverged=rows[:5])
  assert cells[0].verdict == "cannot_be_judged" and cells[0].n_diverged == 5 and cells[0].n_runs == 16
  assert "5 of its 16 runs diverged" in cells[0].verdict_text
  ok = verdicts.paired_cells([r for r in rows if r["diverged_at"] is None], margin=0.03, diverged=rows[:1])
  assert ok[0].verdict != "cannot_be_judged"   # 1 of 16 is under the 25% share


def test_too_few_pairs_cannot_tell():
  rows = _pair_rows({100: [0.1, 0.1], 1000: [0.1, 0.1]})
  c, = verdicts.paired_cells(rows, margin=0.03)
  assert c.verdict == "cannot_tell" and "fewer than" in c.verdict_text
  assert all(p.pairs_needed >= verdicts.MIN_PAIRS - 2 for p in c.points)


def test_the_margin_is_validated():
  import pathlib
  from jaxscale import config as config_lib
  smoke = str(pathlib.Path(__file__).resolve().parents[2] / "configs" / "smoke.py")
  for bad in ("0", "-0.1", "abc", "nan"):
    with pytest.raises(JaxscaleError, match="margin") as e:
      config_lib.load(smoke, [f"--config.study.margin={bad}"])
    assert "\n" not in str(e.value)
  assert config_lib.load(smoke, ["--config.study.margin=0.05"]).study.margin == 0.05


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


def law_check(statistics, params, r2_cells, holdouts):
  """Why a law fails `law_selection.law_checks`; () if it passes."""
  return tuple(c["reason"] for c in law_selection.law_checks(statistics, params, r2_cells, holdouts)
               if not c["passed"])
GOOD_PARAMS = {"E_inf": 0.01, "A": 1.0, "alpha": 0.3, "B": 2.0, "beta": 0.5, "C": 1.0, "gamma": 0.4}


def test_law_check_passes_a_good_law_and_uses_the_cell_r2():
  # the runs' R² (0.8) is below R2_MIN, but the check is made on the cell means
  assert law_check(GOOD_STATS, GOOD_PARAMS, 0.95, {"Dp": 0.1, "M": 0.12}) == ()
  assert "cell means 0.85" in law_check(GOOD_STATS, GOOD_PARAMS, 0.85, {"Dp": 0.1, "M": 0.1})[0]


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
  reasons = law_check(stats, params, 0.95, holdouts)
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


def test_the_report_and_the_simulator_use_the_same_decision_code(analyzed, monkeypatch):
  import pathlib
  import sys
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
  import sim_decisions
  from jaxscale.study import adaptive
  assert sim_decisions.judge_points is verdicts.judge_points
  assert sim_decisions.judge_cell is verdicts.judge_cell
  assert sim_decisions.adaptive_lib.next_pairs is adaptive.next_pairs
  # the analysis' verdicts are paired_cells' at the study's family ...
  config, rows = study_config(bootstrap=30), synthetic_rows()
  fam = analysis.family_rule(config)
  again = verdicts.paired_cells(rows, int(config.seed), float(config.study.margin), fam,
                                tuple(config.study.arms))
  from jaxscale.laws import api
  assert api.sanitize(verdicts.paired_json(again)) == analyzed.fits["paired"]
  # ... judge_points (what the simulator calls) gives every point the same verdict ...
  flat = [p for c in again for p in c.points]
  levels, judged = verdicts.judge_points([p.deltas for p in flat], float(config.study.margin), fam)
  assert levels == verdicts.levels_of(again) and [j[2] for j in judged] == [p.verdict for p in flat]
  # ... and paired_cells decides every point by study_levels and judge_point, every cell by judge_cell
  calls = {"levels": 0, "point": 0, "cell": 0}
  lv, point, cell = verdicts.study_levels, verdicts.judge_point, verdicts.judge_cell

  def count(name, fn):
    def wrapped(*a, **k):
      calls[name] += 1
      return fn(*a, **k)
    return wrapped
  monkeypatch.setattr(verdicts, "study_levels", count("levels", lv))
  monkeypatch.setattr(verdicts, "judge_point", count("point", point))
  monkeypatch.setattr(verdicts, "judge_cell", count("cell", cell))
  cells = verdicts.paired_cells(rows, 0, float(config.study.margin), fam)
  assert calls == {"levels": 1, "point": sum(len(c.points) for c in cells), "cell": len(cells)}
  assert calls["cell"] > 0
