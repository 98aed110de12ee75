"""Study analysis on synthetic records drawn from two known laws with a known crossing."""

import numpy as np
import pytest
from scipy.optimize import brentq

from jaxscale.config import base_config
from jaxscale.errors import JaxscaleError
from jaxscale.report import render
from jaxscale.study import analysis

MODELS = (("vit_tiny_xs", 50_000), ("vit_tiny_s", 200_000), ("vit_tiny_m", 800_000))
DPS, DFS = (250, 800, 2500, 8000), (100, 300, 1000)


def plain(dp, m, df):
  return 0.03 + 6.0 * dp ** -0.4 + 30 * m ** -0.5 + 2 * df ** -0.5


def distilled(dp, m, df):
  return 0.05 + 1.0 * dp ** -0.2 + 30 * m ** -0.5 + 2 * df ** -0.5


def synthetic_rows(noise=0.01, seed=0):
  rng = np.random.default_rng(seed)
  rows = []
  for arm, law in ((False, plain), (True, distilled)):
    for model, m in MODELS:
      for dp in DPS:
        for df in DFS:
          for s in (0, 1):
            e = law(dp, m, df) * np.exp(noise * rng.normal())
            rows.append(dict(stage="finetune", model=model, params=m, dp=dp, df=df, distilled=arm,
                             seed=s, eval_error=float(e), wall_s=1.0, cell_id=f"{model}-{dp}-{df}-{s}-{arm}"))
  return rows


def study_config(bootstrap=0):
  c = base_config()
  c.study.update(models=tuple(m for m, _ in MODELS), dp=DPS, df=DFS, seeds=(0, 1), bootstrap=bootstrap)
  return c


@pytest.fixture(scope="module")
def analyzed():
  return analysis.analyze_records(study_config(bootstrap=30), synthetic_rows(), progress=False)


def test_boundary_matches_the_true_crossing(analyzed):
  content, numbers = analyzed
  m, df = 800_000, 100
  truth = brentq(lambda dp: plain(dp, m, df) - distilled(dp, m, df), 250, 8000)
  roots = content["boundary"]["roots"]
  assert len(roots) == 1
  assert roots[0]["value"] == pytest.approx(truth, rel=0.1)
  assert roots[0]["ci_low"] <= roots[0]["value"] <= roots[0]["ci_high"]
  assert content["boundary"]["sign_below"] == 1  # distillation helps at small Dp
  assert f"{roots[0]['value']:,.0f}" in numbers["summary"]
  # one boundary per (M, Df) of the grid
  assert len(content["boundaries"]) == len(MODELS) * len(DFS)


def test_curves_bands_and_points(analyzed):
  _, numbers = analyzed
  assert {p["arm"] for p in numbers["points"]} == {"plain", "distilled"}
  line = numbers["curves"]["dp"]["panels"][0]["lines"][0]
  assert np.all(line["lo"] <= line["mid"] + 1e-9) and np.all(line["mid"] <= line["hi"] + 1e-9)
  # fitted predictions are close to the noisy measurements
  rel = [abs(p["pred"] - p["error"]) / p["error"] for p in numbers["points"]]
  assert np.median(rel) < 0.05
  assert numbers["backtests"] and all(b["log_rmse"] >= 0 for b in numbers["backtests"])
  # every (arm, model, Df) gets a 1-D exponent; the plain arm's is the steeper one
  alphas = {arm: np.median([e["alpha"] for e in numbers["exponents"] if e["arm"] == arm])
            for arm in ("plain", "distilled")}
  assert alphas["plain"] > alphas["distilled"]


def test_report_files(analyzed, tmp_path):
  content, numbers = analyzed
  out = render.write_report(numbers, str(tmp_path))
  md = open(out["markdown"]).read()
  assert render.fmt(content["groups"]["true"]["params"]["alpha"]["value"]) in md
  assert "Dp*" in open(out["html"]).read()
  assert (tmp_path / "delta_e.png").stat().st_size > 1000


def test_too_few_records_is_a_one_line_error():
  rows = synthetic_rows()[:5]
  with pytest.raises(JaxscaleError, match="fine-tune records"):
    analysis.analyze_records(study_config(), rows, progress=False)
