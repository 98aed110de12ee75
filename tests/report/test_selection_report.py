"""The report of a study whose Dp images are chosen by a data-pruning rule (`configs/default.py:pruning`:
the plain arm, selections random / prototypes_hard / prototypes_easy): the figure, the section and
fits.json's "selection_effects", on synthetic records with a known effect of each rule."""

import json
import os

import numpy as np
import pytest

import synthetic
from jaxscale.report import figures, sections

MODELS = ("vit_tiny_xs", "vit_tiny_m")
# E_selection − E_random of every (model, seed, Dp, Df): prototypes_hard is worse at the smallest Dp,
# prototypes_easy better at the largest, both no different elsewhere (and on the pretraining task).
EFFECT = {"prototypes_hard": {160: 0.05}, "prototypes_easy": {16000: -0.03}}
NOISE = 0.003


def pruning_rows(seed=3):
  """The synthetic study's plain arm at two widths, random, and each rule's copy of it plus its effect
  and noise (cell ids as the grid names them). The noise of `seed` 3 gives no false verdict among the
  null comparisons (a family's chance of one is up to 5%; seeds 0 and 1 each have one)."""
  rng = np.random.default_rng(seed)
  plain = [r for r in synthetic.rows() if not r["distilled"] and r["model"] in MODELS]
  out = [{**r, "selection": "random"} for r in plain]
  for sel, effect in EFFECT.items():
    for r in plain:
      if r["cell_id"].startswith("teacher-"):
        continue
      shift = effect.get(r["dp"], 0.0) if r["stage"] == "finetune" else 0.0
      out.append({**r, "selection": sel, "eval_error": r["eval_error"] + shift + NOISE * rng.normal(),
                  "cell_id": r["cell_id"].replace("-plain-", f"-{sel}-plain-")})
  return out


def pruning_config():
  c = synthetic.config(bootstrap=20)
  c.study.update(models=MODELS, arms=("plain",), selection=("random",) + tuple(EFFECT), adaptive=False,
                 law="transfer_additive")
  return c


@pytest.fixture(scope="module")
def pruning_study(tmp_path_factory):
  """(workdir, StudyAnalysis, report markdown) of the pruning study, built as `jaxscale report` builds
  it (report.command.build: analyze_study, then write_report)."""
  from jaxscale.report import render
  from jaxscale.study import analysis
  workdir = tmp_path_factory.mktemp("pruning")
  with open(workdir / "records.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in pruning_rows())
  result = analysis.analyze_study(pruning_config(), str(workdir), progress=False)
  render.write_report(result, str(workdir / "report"))
  return workdir, result, (workdir / "report" / "report.md").read_text(encoding="utf-8")


def test_the_laws_and_pairs_stay_those_of_the_random_subsets(pruning_study):
  _, result, _ = pruning_study
  assert {r["selection"] for r in result.rows} == {"random"}
  assert set(result.selection_effects) == {"finetune", "pretrain"}
  down = result.selection_effects["finetune"]["all"]
  assert list(down) == ["random", "prototypes_easy", "prototypes_hard"]
  assert list(result.selection_effects["finetune"]["by_model"]) == list(MODELS)  # by size


def test_fits_json_carries_the_selection_effects(pruning_study):
  workdir, result, _ = pruning_study
  fits = json.loads((workdir / "fits.json").read_text())
  hard = {v["dp"]: v for v in fits["selection_effects"]["finetune"]["all"]["prototypes_hard"]["vs_random"]}
  assert hard[160]["verdict"] == "worse" and hard[160]["diff"] == pytest.approx(0.05, abs=0.005)
  assert hard[160]["pairs"] == len(MODELS) * len(synthetic.SEEDS)
  assert hard[160]["level"] == pytest.approx(1 - 0.05 / 8)  # 2 rules x 4 Dp
  assert fits["selection_effects"] == result.fits["selection_effects"]


def test_the_section_states_each_effect_within_its_interval(pruning_study):
  _, result, md = pruning_study
  section = md.split("## Which Dp images: pruning against random")[1].split("\n## ")[0]
  down = result.selection_effects["finetune"]["all"]
  hard = {v["dp"]: v for v in down["prototypes_hard"]["vs_random"]}
  easy = {v["dp"]: v for v in down["prototypes_easy"]["vs_random"]}
  assert [hard[d]["verdict"] for d in synthetic.DPS] == ["worse", "cannot tell", "cannot tell", "cannot tell"]
  assert [easy[d]["verdict"] for d in synthetic.DPS] == ["cannot tell"] * 3 + ["better"]
  assert (f"prototypes_hard: worse than random at Dp 160 ({sections._diff_ci(hard[160])}), cannot tell "
          f"at 16,000 ({sections._diff_ci(hard[16000])}); cannot tell at the Dp in between (800, 4,000)") in section
  assert (f"prototypes_easy: cannot tell at Dp 160 ({sections._diff_ci(easy[160])}), better than random "
          f"at 16,000 ({sections._diff_ci(easy[16000])})") in section
  assert hard[160]["ci_low"] > 0 and easy[16000]["ci_high"] < 0 and hard[16000]["ci_low"] < 0 < hard[16000]["ci_high"]
  assert "at level 0.9938: Bonferroni over the 8 (selection, Dp) comparisons" in section
  for sel in down:
    assert f"Dp exponent {sections.exponent_text(down[sel]['exponent'])}" in section
    assert down[sel]["exponent"]["ci_low"] < down[sel]["exponent"]["value"] < down[sel]["exponent"]["ci_high"]
  assert "Pretraining task (the same rule" in section and "better than random" not in section.split(
      "Pretraining task")[1].split("###")[0]
  assert f"| prototypes_hard | downstream | {sections._diff_ci(hard[160])} (6) worse |" in section
  assert "error_vs_dp_selection.png" in section


def test_the_figure_has_a_line_per_selection_and_a_panel_per_model(pruning_study):
  workdir, result, _ = pruning_study
  n = figures.selection_numbers(result)
  assert [p["title"] for p in n["panels"]] == [f"{m}: downstream, mean over Df" for m in MODELS] + [
      f"{m}: pretraining task" for m in MODELS]
  assert [k for k, _ in n["keys"]] == ["random", "prototypes_easy", "prototypes_hard"]
  assert all(label.startswith(f"{k}: Dp exponent ") for k, label in n["keys"])
  hard = next(s for s in n["panels"][0]["series"] if s["key"] == "prototypes_hard")
  assert hard["lo"][0] < hard["mean"][0] < hard["hi"][0]   # the paired interval around the mean
  path = workdir / "report" / "error_vs_dp_selection.png"
  assert path.stat().st_size > 10_000
  html = (workdir / "report" / "report.html").read_text(encoding="utf-8")
  assert 'alt="error_vs_dp_selection.png"' in html


def test_a_random_only_study_has_neither_figure_nor_section(study):
  workdir, result, out, _ = study
  assert result.selection_effects == {} and "selection_effects" not in result.fits
  assert figures.selection_numbers(result) is None and sections.pruning_blocks(result) == []
  assert not os.path.exists(os.path.join(out["folder"], "error_vs_dp_selection.png"))
  assert "Which Dp images" not in open(out["markdown"], encoding="utf-8").read()
  assert "selection_effects" not in json.load(open(os.path.join(workdir, "fits.json"), encoding="utf-8"))
