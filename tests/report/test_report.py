"""The report of a synthetic study with a known answer: first screen, setup, tables, figures, files,
and a fixed-size screenshot in headless Chromium."""

import dataclasses
import json
import os
import shutil
import struct
import subprocess

import pytest

import synthetic
from jaxscale.report import figures, render, sections


def _first_screen(md: str) -> str:
  return md.split("## Setup")[0]


def test_result_files_have_the_permissions_of_the_figures(study):
  workdir, _, out, _ = study
  mode = lambda p: os.stat(p).st_mode & 0o777
  png = mode(os.path.join(out["folder"], "delta_e.png"))
  assert png & 0o044  # figures are readable by others (umask 022: 0644)
  for path in (out["markdown"], out["html"], os.path.join(workdir, "fits.json")):
    assert mode(path) == png, path


def test_first_screen_says_what_was_run_measured_and_how_sure(study):
  _, result, out, _ = study
  md = open(out["markdown"], encoding="utf-8").read()
  first = _first_screen(md)
  for needle in ("What was run", "What was measured", "How sure", "5,000 images", "2,600 images",
                 "M = 60,740", "seeds 0, 1, 2", "The study's 64 points are judged as one family", "false discovery rate of 5%",
                 "inside ±0.03", "Diverged runs: none"):
    assert needle in first, needle
  assert "more seed pairs" in first or "Every point is decided." in first
  head = max((c for c in result.paired if c.stage == "finetune"), key=lambda c: (c.params, -c.df))
  assert head.verdict == "helps_below_dp_star"  # the synthetic truth: ΔE > 0 up to Dp 800, < 0 above
  assert head.verdict_text in first
  pre = max((c for c in result.paired if c.stage == "pretrain"), key=lambda c: c.params)
  assert pre.verdict_text in first


def test_every_paired_claim_is_a_table_row(study):
  _, result, out, _ = study
  md = open(out["markdown"], encoding="utf-8").read()
  for c in result.paired:
    for p in c.points:
      assert sections._delta(p) in md
  # the measured means with their CIs, downstream and pretraining
  for m in result.measured:
    if m.arm != "teacher":
      assert sections._mean_ci(m) in md


def test_setup_table(study):
  _, _, out, _ = study
  md = open(out["markdown"], encoding="utf-8").read()
  setup = md.split("## Setup")[1].split("##")[0]
  for needle in ("jaxscale_symbols/16px (test split: 5,000 images)", "α = 0.5, T = 2, during pretrain",
                 f"its error on the pretraining test split {synthetic.TEACHER_ERROR:.3f}",
                 "vit_tiny_xs (16,556)", "Dp = 160: 3,200", "Df = 1,000: 150", "batch_size 32"):
    assert needle in setup, needle


def test_laws_that_pass_are_drawn_over_the_data_only(study):
  _, result, _, _ = study
  assert all(not f.failed for f in result.arms.values())
  n = figures.error_vs_dp_numbers(result)
  keys = {k for k, _ in n["keys"]}
  for panel in n["panels"]:
    assert panel["note"] is None
    for s in panel["series"]:
      assert s["key"] in keys  # the legend names every series
      assert min(s["curve"]["x"]) >= min(synthetic.DPS) and max(s["curve"]["x"]) <= max(synthetic.DPS)


def test_a_failed_law_is_labelled_and_not_drawn(study, tmp_path):
  _, result, _, _ = study
  failed = {arm: dataclasses.replace(f, failed=("R² (log) 0.49 < 0.9",)) for arm, f in result.arms.items()}
  bad = dataclasses.replace(result, arms=failed)
  for numbers in (figures.error_vs_dp_numbers(bad), figures.error_vs_df_numbers(bad),
                  figures.error_vs_m_numbers(bad)):
    for panel in numbers["panels"]:
      assert "failed" in panel["note"] and all(s["curve"] is None for s in panel["series"])
  out = render.write_report(bad, str(tmp_path))
  md = open(out["markdown"], encoding="utf-8").read()
  assert "fails its checks (R² (log) 0.49 < 0.9)" in _first_screen(md)
  assert "| plain | failed |" in md


def test_paired_figure_has_a_panel_per_model_with_every_seed(study):
  _, result, out, _ = study
  n = figures.delta_numbers(result)
  assert [p["title"].split()[0] for p in n["panels"]] == [m for m, _, _ in synthetic.MODELS]
  for panel in n["panels"]:
    assert len(panel["series"]) == 1 + len(synthetic.DFS)  # the pretraining task and each Df
    for s in panel["series"]:
      assert len(s["seeds"]) == len(synthetic.DPS) * len(synthetic.SEEDS)
      assert s["dp_star"] is None or 800 < s["dp_star"] < 4000
  # Dp* is drawn exactly where the verdict is a crossing
  crossing = [c for c in result.paired if c.verdict.endswith("below_dp_star")]
  assert len(crossing) >= len(result.paired) // 2
  assert sum(s["dp_star"] is not None for p in n["panels"] for s in p["series"]) == len(crossing)
  html = open(out["html"], encoding="utf-8").read()
  drawn = [f for f in figures.FIGURES if f.numbers(result) is not None]
  assert len(drawn) == len(figures.FIGURES) - 1  # all but the pruning figure (random subsets only)
  assert html.count("data:image/png;base64,") == len(drawn)


def test_learning_curves_and_the_budget_check(study):
  workdir, result, out, _ = study
  md = open(out["markdown"], encoding="utf-8").read()
  assert "## Learning curves: does the budget bind?" in md and "learning_curves.png" in md
  check = result.fits["budget_check"]["pretrain"]
  m = max(result.curves["pretrain"]["figure"], key=lambda k: next(x.params for x in result.measured
                                                                   if x.model == k))
  # the synthetic curve falls by (0.95 - E)(1 - 0.7^2 ... ) : from 0.7 to the end, (0.95 - E)·0.09
  final = [x.mean for x in result.measured if x.stage == "pretrain" and x.model == m and x.arm == "plain"
           and x.dp == max(synthetic.DPS)][0]
  assert check[m]["drop"] == pytest.approx((0.95 - final) * 0.09, abs=1e-6)
  assert check[m]["text"] in md
  n = figures.curves_numbers(result)
  assert [p["title"] for p in n["panels"]] == [name for name, _, _ in synthetic.MODELS]
  assert n["dp"] == [min(synthetic.DPS), max(synthetic.DPS)]
  assert os.path.getsize(os.path.join(out["folder"], "learning_curves.png")) > 10_000


def test_each_warning_is_logged_once(study):
  _, _, _, messages = study
  assert len(messages) == len(set(messages)), messages


def _png_size(path):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n"
  return struct.unpack(">II", head[16:24])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on PATH (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(study, tmp_path):
  _, _, out, _ = study
  shot = tmp_path / "report.png"
  proc = subprocess.run(
      [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
       "--window-size=1400,1000", f"--screenshot={shot}", "file://" + os.path.abspath(out["html"])],
      capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert _png_size(shot) == (1400, 1000)
  assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_a_one_seed_study_reports_without_claims(tmp_path):
  """The smoke study's shape: one seed, two Dp; every verdict is 'cannot tell', no CI is invented."""
  from jaxscale.study import analysis
  rows = [r for r in synthetic.rows() if r["seed"] == 0 and r["model"] in ("vit_tiny_xs", "vit_tiny_m")
          and r["dp"] in (160, 16000) and r["df"] in (0, 100, 1000)]
  c = synthetic.config(bootstrap=0)
  c.study.update(models=("vit_tiny_xs", "vit_tiny_m"), dp=(160, 16000), df=(100, 1000), seeds=(0,))
  result = analysis.analyze_records(c, rows, progress=False)
  assert {p.verdict for p in result.paired} == {"cannot_tell"}
  assert all(p.fraction_crossing is None and p.crossing is None for p in result.paired)
  assert all(m.ci is None for m in result.measured)
  out = render.write_report(result, str(tmp_path))
  md = open(out["markdown"], encoding="utf-8").read()
  assert "fewer than 3 paired seeds" in _first_screen(md)
  # every figure but the learning curves (no curves.jsonl here: no figure, no budget section) and the
  # pruning figure (random subsets only)
  absent = ("learning_curves.png", "error_vs_dp_selection.png")
  assert all((tmp_path / f.name).exists() == (f.name not in absent) for f in figures.FIGURES)
  assert "does the budget bind" not in md


def test_the_law_section_shows_both_forms_and_why_one_is_reported(study):
  workdir, result, out, _ = study
  md = open(out["markdown"], encoding="utf-8").read()
  sel = json.load(open(os.path.join(workdir, "fits.json"), encoding="utf-8"))["law_selection"]
  assert sel["mode"] == "auto" and set(sel["forms"]) == {"transfer_additive", "transfer_multiplicative"}
  assert sel["chosen"] == result.law == "transfer_additive"  # the synthetic truth is additive
  for form in sel["forms"].values():
    assert set(form) == {"formula", "arms", "backtests", "mean_log_rmse", "chosen"}
    assert set(form["arms"]) == {"plain", "distilled"}
  law = md.split("## Fitted law")[1]
  assert "|  | transfer_additive | transfer_multiplicative |" in law
  for needle in ("R² (log), plain, seed-averaged cells", "R² (log), distilled, single runs",
                 "backtest log-RMSE of the cell means, plain, largest Dp = 16,000 held out", "mean backtest log-RMSE",
                 "| reported | yes | no |", sel["reason"]):
    assert needle in law, needle
  assert "chosen over transfer_multiplicative by the backtests" in _first_screen(md)
  # every check of the reported law is a row, with its value
  for arm in result.arms.values():
    assert arm.failed == () and len(arm.checks) >= 7
    for c in arm.checks:
      assert f"| {arm.arm} | {c['check']} |" in law
  # the figures draw the reported form
  assert result.law in figures.predicted_caption(result, figures.predicted_numbers(result))


def test_a_failing_backtest_is_shown_failing(study, tmp_path):
  _, result, _, _ = study
  sel = result.selection
  forms = tuple(dataclasses.replace(f, backtests=tuple(
      dataclasses.replace(r, log_rmse=0.31, log_rmse_se=None, log_rmse_rows=0.35, passed=False)
      if (f.name, r.arm, r.input) == (result.law, "plain", "Dp") else r for r in f.backtests))
      for f in sel.forms)
  plain = result.arms["plain"]
  reason = "backtest with the largest Dp held out: log-RMSE 0.310 > 0.15"
  checks = tuple({**c, "value": 0.31, "passed": False, "reason": reason}
                 if c["check"] == "backtest, largest Dp held out" else c for c in plain.checks)
  arms = {**result.arms, "plain": dataclasses.replace(plain, checks=checks, failed=(reason,))}
  out = render.write_report(dataclasses.replace(result, selection=dataclasses.replace(sel, forms=forms), arms=arms),
                            str(tmp_path))
  md = open(out["markdown"], encoding="utf-8").read()
  assert reason in _first_screen(md)
  assert ("| backtest log-RMSE of the cell means, plain, largest Dp = 16,000 held out | "
          "0.31 (FAILS: > 0.15; single runs 0.35) |") in md
  assert "| plain | backtest, largest Dp held out | 0.31 | log-RMSE ≤ 0.15 | FAILS |" in md


def test_the_laws_crossing_table_states_each_verdict_in_words(study):
  _, result, out, _ = study
  md = open(out["markdown"], encoding="utf-8").read()
  table = md.split("### Crossing of the fitted laws per (M, Df)")[1].split("\n\n")[2]
  rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
  assert len(rows) == len(result.crossings) == len(result.fits["boundaries"]) > 0
  for line, b in zip(rows, result.crossings):
    assert line.rstrip(" |").endswith(sections.LAW_VERDICT_WORDS[b.verdict]), line


def test_a_backtest_within_one_se_of_the_limit_is_called_marginal(study, tmp_path):
  _, result, _, _ = study
  sel = result.selection
  forms = tuple(dataclasses.replace(f, backtests=tuple(
      dataclasses.replace(r, log_rmse=0.145, log_rmse_se=0.01, passed=True)
      if (f.name, r.arm, r.input) == (result.law, "distilled", "M") else r for r in f.backtests))
      for f in sel.forms)
  out = render.write_report(dataclasses.replace(result, selection=dataclasses.replace(sel, forms=forms)),
                            str(tmp_path))
  md = open(out["markdown"], encoding="utf-8").read()
  assert ("distilled arm, largest M held out: log-RMSE 0.145 ± 0.010 (SE) against the limit 0.15, so its "
          "pass is marginal") in _first_screen(md)
  assert "0.145 ± 0.01 SE (passes, marginal: within one SE of the limit" in md
  assert _first_screen(render.to_markdown(sections.first_screen(result))).count("marginal") == 0


def test_diverged_runs_are_named_on_the_first_screen(tmp_path):
  from jaxscale.study import analysis
  rows = synthetic.rows()
  bad = [r for r in rows if r["stage"] == "finetune" and r["model"] == "vit_tiny_m" and r["df"] == 100][:10]
  for r in bad:
    r["diverged_at"] = 3
  c = synthetic.config(bootstrap=0)
  result = analysis.analyze_records(c, rows, progress=False)
  first = _first_screen(render.to_markdown(sections.first_screen(result)))
  assert f"Diverged runs: 10 of {len(rows):,}" in first and bad[0]["cell_id"] in first
  cell = next(x for x in result.paired if x.model == "vit_tiny_m" and x.df == 100 and x.stage == "finetune")
  assert cell.verdict == "cannot_be_judged" and cell.n_diverged == 10
  assert not any(r["cell_id"] == bad[0]["cell_id"] for r in result.rows)
