"""The selection axis of a study: config, cells and groups, a small study end to end, and the
per-selection summary (paired against random, fitted Dp exponent)."""

import numpy as np
import pytest

from jaxscale import config as config_lib
from jaxscale.config import base_config
from jaxscale.data import scores as scores_lib
from jaxscale.data import sources, subsets
from jaxscale.data.seeding import derive_seed
from jaxscale.errors import JaxscaleError
from jaxscale.study import grid, pruning, records, runner
from jaxscale.study.selection_effects import dp_exponent, selection_effects

RULES = ("prototypes_hard", "prototypes_easy")


def study_config(**study):
  c = base_config()
  for stage in ("pretrain", "finetune"):  # one step count whatever the subset size: one group per stage
    c[stage].optim.update(min_steps=100, max_steps=100)
  c.study.update(dict(models=("vit_tiny_xs",), dp=(300, 100), df=(50,), arms=("plain",), seeds=(0, 1),
                      teacher_dp=0), **study)
  return c


# ----------------------------------------------------------------------------- config and grid

def test_random_alone_keeps_todays_cells_and_groups():
  c = study_config(arms=("plain", "distilled"))
  explicit = study_config(arms=("plain", "distilled"), selection=("random",))
  assert [x.id for x in grid.expand(c)] == [x.id for x in grid.expand(explicit)]
  assert all("random" not in x.id and "prototypes" not in x.id for x in grid.expand(c))
  assert [g.id for g in grid.groups(c)] == ["pt-vit_tiny_xs-100steps", "pt-vit_tiny_xs-kd-100steps",
                                            "ft-vit_tiny_xs-100steps"]
  assert runner.study_hash(c) == runner.study_hash(explicit)
  assert runner.study_hash(c) != runner.study_hash(study_config(arms=("plain", "distilled"),
                                                                selection=("random", "prototypes_hard")))


def test_selection_axis_cells_ids_and_order():
  c = study_config(selection=("random",) + RULES)
  cells = grid.expand(c)
  assert grid.count(cells) == {"teacher": 1, "pretrain": 2 * 3 * 2, "finetune": 2 * 3 * 2}
  ids = [x.id for x in cells]
  assert len(set(ids)) == len(ids)
  assert "pt-vit_tiny_xs-dp100-prototypes_hard-plain-s1" in ids
  assert "ft-vit_tiny_xs-dp300-prototypes_easy-plain-s0-df50" in ids and "pt-vit_tiny_xs-dp100-plain-s0" in ids
  ft = next(x for x in cells if x.id == "ft-vit_tiny_xs-dp300-prototypes_easy-plain-s0-df50")
  assert ft.pretrain_cell().selection == "prototypes_easy" and not grid.selects_by_scores(ft)
  groups = grid.groups(c)
  assert [g.id for g in groups] == ["pt-vit_tiny_xs-100steps", "pt-vit_tiny_xs-scored-100steps",
                                    "ft-vit_tiny_xs-100steps"]
  teacher = grid.teacher_of(c.study)
  assert teacher in groups[0].cells and all(not grid.selects_by_scores(x) for x in groups[0].cells)
  assert all(grid.selects_by_scores(x) for x in groups[1].cells) and groups[1].scored


def test_teacher_only_when_its_scores_are_used():
  assert not grid.needs_teacher(study_config().study)
  assert grid.needs_teacher(study_config(selection=("random", "prototypes_easy")).study)
  c = study_config(selection=("random", "prototypes_easy"))
  c.study.scores.backbone = "/some/run"
  assert not grid.needs_teacher(c.study) and pruning.study_backbone(c, "/w/cells") == "/some/run"


@pytest.mark.parametrize("change, needle", [
    ({"selection": ("random", "hardest")}, "config.study.selection may hold"),
    ({"selection": ()}, "config.study.selection is empty"),
    ({"selection": ("random", "random")}, "repeats a value"),
])
def test_bad_selection_config(change, needle):
  with pytest.raises(JaxscaleError, match=needle):
    config_lib.validate(study_config(**change))


def test_bad_k_in_config_and_on_the_command_line(capsys, tmp_path):
  c = study_config()
  c.study.scores.k = 1
  with pytest.raises(JaxscaleError, match="config.study.scores.k must be 0"):
    config_lib.validate(c)
  from jaxscale import cli
  assert cli.main(["study", "--config", "configs/smoke.py", "--workdir", str(tmp_path / "w"),
                   "--config.study.selection=('random','hardest')", "--dry-run"]) == 2
  err = capsys.readouterr().err.strip()
  assert "config.study.selection may hold" in err and "\n" not in err


# ----------------------------------------------------------------------------- end to end

def tiny_study(data_dir):
  c = base_config()
  c.data.data_dir = data_dir
  c.pretrain.dataset = "jaxscale_glyphs/16px_1k"
  c.pretrain.optim.update(batch_size=32, min_steps=3, max_steps=3, eval_batch_size=512)
  c.finetune.dataset = "jaxscale_digits/16px"
  c.finetune.optim.update(batch_size=32, min_steps=2, max_steps=2, eval_batch_size=512)
  c.engine.steps_per_dispatch = 3
  # One Dp: the teacher's group (teacher + random) and the scored group (hard + easy) are two runs
  # each, so they share one compiled program.
  c.study.update(models=("vit_tiny_xxs",), dp=(104,), df=(50,), arms=("plain",), seeds=(0,),
                 teacher_dp=1000, selection=("random",) + RULES, bootstrap=0)
  c.study.scores.k = 6
  return config_lib.validate(c)


def test_a_study_selects_by_its_teachers_scores(data_dir, tmp_path):
  config = tiny_study(data_dir)
  workdir = str(tmp_path / "study")
  runner.prepare_workdir(config, workdir)
  rows = runner.run_cells(config, workdir, show_progress=False)
  assert sorted(r["cell_id"] for r in rows) == sorted(c.id for c in grid.expand(config))
  path = pruning.scores_file(runner.paths(workdir)["cells"])
  manifest = scores_lib.read_manifest(path)
  assert manifest["k"] == 6 and manifest["backbone_model"] == "vit_tiny_xxs"
  ranking = scores_lib.load(path)
  labels = sources.load_labels("jaxscale_glyphs/16px_1k", "train", data_dir)
  pt = {(r["selection"], r["dp"]): r for r in rows if r["stage"] == "pretrain" and not r["cell_id"].startswith("teacher")}
  for (sel, dp), r in pt.items():  # each record's subset is the selection's subset of those scores
    idx = subsets.nested_subset(labels, dp, derive_seed(0, "pretrain/subset"), sel, ranking)
    assert r["subset_hash"] == subsets.manifest_hash(idx, sel)
  assert len({r["subset_hash"] for r in pt.values()}) == 3
  ft = [r for r in rows if r["stage"] == "finetune"]
  assert {r["selection"] for r in ft} == {"random", *RULES}
  assert len({r["subset_hash"] for r in ft}) == 1     # the Df subset is paired across selections
  # the teacher's group ran first, then the scored group; scores are computed once
  assert runner.run_cells(config, workdir, show_progress=False) == records.read(runner.paths(workdir)["records"])
  assert scores_lib.read_manifest(path) == manifest


# ----------------------------------------------------------------------------- the summary

def synthetic_records(offsets, exponent=0.3, noise=0.02, seeds=6):
  """Fine-tune records: E = 2 Dp^-exponent + offsets[sel](Dp) + a per-(model, seed) offset + noise."""
  rng = np.random.default_rng(0)
  rows = []
  for model in ("m1", "m2"):
    for seed in range(seeds):
      unit = rng.normal(0, 0.05)                              # shared by every selection of the unit
      for dp in (100, 300, 1000, 3000):
        for df in (50, 150):
          base = 2 * dp ** -exponent + unit
          for sel, off in offsets.items():
            rows.append({"stage": "finetune", "cell_id": f"ft-{model}-{sel}-{seed}-{dp}-{df}", "model": model,
                         "seed": seed, "dp": dp, "df": df, "arm": "plain", "distilled": False,
                         "selection": sel, "eval_error": base + off(dp) + rng.normal(0, noise)})
  rows.append({"stage": "pretrain", "cell_id": "teacher-x", "model": "m1", "seed": 0, "dp": 3000, "df": 0,
               "selection": "random", "eval_error": 0.1, "arm": "plain"})
  return rows


def test_selection_effects_pairs_against_random():
  offsets = {"random": lambda dp: 0.0, "prototypes_hard": lambda dp: 0.08 if dp >= 1000 else -0.08,
             "prototypes_easy": lambda dp: 0.0}
  rows = synthetic_records(offsets)
  out = selection_effects(rows, bootstrap=50)
  assert list(out) == ["random", "prototypes_easy", "prototypes_hard"]
  rand = out["random"]
  assert rand["dp"] == [100, 300, 1000, 3000] and rand["units"] == [12] * 4 and rand["vs_random"] == []
  mean100 = np.mean([r["eval_error"] for r in rows if r["selection"] == "random" and r["dp"] == 100
                     and r["stage"] == "finetune"])
  assert rand["mean"][0] == pytest.approx(mean100)
  hard = {v["dp"]: v for v in out["prototypes_hard"]["vs_random"]}
  assert [hard[d]["verdict"] for d in (100, 300, 1000, 3000)] == ["better", "better", "worse", "worse"]
  assert all(v["pairs"] == 12 and v["ci_low"] < v["diff"] < v["ci_high"] for v in hard.values())
  assert all(v["level"] == pytest.approx(1 - 0.05 / 8) for v in hard.values())  # 2 rules x 4 Dp compared
  assert hard[3000]["diff"] == pytest.approx(0.08, abs=0.02)
  # the per-unit offset (SD 0.05) cancels in the pairs: the interval is far narrower than it
  assert all(v["ci_high"] - v["ci_low"] < 0.05 for v in hard.values())
  assert {v["verdict"] for v in out["prototypes_easy"]["vs_random"]} <= {"cannot tell", "better", "worse"}


def test_selection_effects_fits_the_dp_exponent():
  rows = synthetic_records({"random": lambda dp: 0.0}, exponent=0.3, noise=0.0)
  for r in rows:
    r["eval_error"] = 2 * r["dp"] ** -0.3 * (1 + 0.02 * r["seed"])   # exact power laws, scaled per unit
  exp = selection_effects(rows, bootstrap=20)["random"]["exponent"]
  assert exp["value"] == pytest.approx(0.3, abs=1e-9)
  assert exp["ci_low"] == pytest.approx(0.3, abs=1e-9) and exp["ci_high"] == pytest.approx(0.3, abs=1e-9)
  steep = synthetic_records({"random": lambda dp: 0.0}, exponent=0.5, noise=0.0)
  assert selection_effects(steep, bootstrap=0)["random"]["exponent"]["value"] > 0.35
  assert np.isnan(dp_exponent([100], [0.5]))


def test_fit_split_by_selection(tmp_path, capsys):
  import json
  from jaxscale import cli
  offsets = {"random": lambda dp: 0.0, "prototypes_hard": lambda dp: 0.05 * np.log10(dp / 300),
             "prototypes_easy": lambda dp: 0.02}
  path = tmp_path / "records.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in synthetic_records(offsets, seeds=3)))
  out = tmp_path / "fits.json"
  assert cli.main(["fit", str(path), "--law", "power", "--inputs", "x=dp", "--target", "eval_error",
                   "--split-by", "selection", "--where", "stage=finetune", "--where", "df=50",
                   "--out", str(out)]) == 0
  fits = json.loads(out.read_text())
  assert fits["split_by"] == "selection" and set(fits["groups"]) == {"random", *RULES}
  assert all(g["n"] == 2 * 3 * 4 for g in fits["groups"].values())
  alpha = {k: g["params"]["alpha"]["value"] for k, g in fits["groups"].items()}
  assert len(set(alpha.values())) == 3


def test_the_pruning_variant_of_the_default_study():
  c = config_lib.load("configs/default.py:pruning")
  full = config_lib.load("configs/default.py")
  assert c.study.selection == ("random",) + RULES and c.study.arms == ("plain",)
  assert c.study.dp == full.study.dp and c.study.df == full.study.df
  assert set(c.study.seeds) < set(full.study.seeds) and len(c.study.seeds) == 4   # 4 of the default's 5
  assert grid.count(grid.expand(c)) == {"teacher": 1, "pretrain": 96, "finetune": 288}   # as its docstring says
  assert grid.scores_from_teacher(c.study) and config_lib.result_hash(c) == config_lib.result_hash(full)
