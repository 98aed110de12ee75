"""From a study's records to its results: fitted laws, paired differences, verdicts, fits.json.

`analyze_records(config, rows)` returns a `StudyAnalysis` (dataclasses, no side effects);
`analyze_study(config, workdir)` reads records.jsonl, analyses it and writes fits.json. The two
concerns live below this module: `verdicts` (measured means, paired differences, crossings and
verdicts) and `law_selection` (which joint law is reported, its checks, backtests and fits). The
report (`jaxscale.report`) reads the typed result; nothing here knows about figures or pages.

fits.json of a study is the content of `laws.analyze` plus the blocks this module adds; its
schema and the meaning of every key are in docs/laws.md ("fits.json of a study").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from ml_collections import ConfigDict

from jaxscale import laws
from jaxscale.errors import JaxscaleError
from jaxscale.study import curves as curves_lib
from jaxscale.study import law_selection as selection_lib
from jaxscale.study import records, verdicts
from jaxscale.study.selection_effects import RANDOM, selection_effects
from jaxscale.study.law_selection import ArmFit, Exponent, LawCrossing, LawSelection
from jaxscale.study.verdicts import Measured, PairedCell

SCHEMA_VERSION = 2


@dataclasses.dataclass(frozen=True)
class StudyAnalysis:
  """Everything a study's records support; `fits` is the fits.json content, the other fields its
  typed parts (what the report reads)."""
  config: ConfigDict
  rows: tuple[dict[str, Any], ...]
  law: str
  formula: str
  arms: dict[str, ArmFit]
  measured: tuple[Measured, ...]
  paired: tuple[PairedCell, ...]
  rule: dict[str, Any]            # fits.json "decision_rule": margin, levels, family, pairs needed
  diverged: tuple[str, ...]       # cell ids of the diverged runs left out
  selection: LawSelection
  crossings: tuple[LawCrossing, ...]
  exponents: tuple[Exponent, ...]
  fits: dict[str, Any]
  # Learning curves (curves.jsonl; empty without one): per stage, `curves.figure_curves` and
  # `curves.budget_check` of the plain arm (the report's figure and budget sentences).
  curves: dict[str, Any] = dataclasses.field(default_factory=dict)
  # Dp images chosen by a pruning rule (`config.study.selection` beyond random; empty otherwise): per
  # stage, `selection_effects` of the plain arm over all models ("all") and per model ("by_model"),
  # written to fits.json as "selection_effects" (`selection_summary`).
  selection_effects: dict[str, Any] = dataclasses.field(default_factory=dict)


def _law_check_json(arms: Mapping[str, ArmFit]) -> dict[str, Any]:
  return {a.arm: {"passed": not a.failed, "reasons": list(a.failed), "r2_log_cells": a.r2_cells,
                  "r2_log_rows": a.statistics.get("r2_log"),
                  "exponent_range": list(selection_lib.EXPONENT_RANGE), "checks": list(a.checks)}
          for a in arms.values()}


def family_rule(config: ConfigDict) -> verdicts.FamilyRule:
  """The family a study's points are judged as: its design's points, and its looks (1, or
  `study.max_rounds` when adaptive)."""
  s = config.study
  return verdicts.FamilyRule(verdicts.family_size(s.arms, s.models, s.dp, s.df),
                             int(s.max_rounds) if s.adaptive else 1)


def decision_rule(config: ConfigDict, levels: verdicts.Levels | None = None) -> dict[str, Any]:
  """The "decision_rule" block: the margin, the family, the rounds and the levels the points were
  judged at (`levels`, from `verdicts.study_levels`; without it the Bonferroni floor)."""
  fam = family_rule(config)
  floor = verdicts.point_alpha(fam.points, fam.rounds)
  lv = levels or verdicts.Levels(floor, floor)
  return {"margin": float(config.study.margin), "family_alpha": verdicts.FAMILY_ALPHA,
          "family_points": fam.points, "rounds": fam.rounds, "fdr_per_look": fam.q,
          "point_alpha": lv.diff, "point_level": 1 - lv.diff,
          "equivalence_alpha": lv.equiv, "equivalence_level": 1 - lv.equiv,
          "decided_differ": lv.n_diff, "decided_equivalent": lv.n_equiv, "bonferroni_alpha": floor,
          "interval": "t-interval of the mean paired difference over seeds",
          "error_control": "false discovery rate, Benjamini-Hochberg per family (differ; differ by "
                           "more than the margin) at family_alpha / rounds per look",
          "max_diverged_share": verdicts.MAX_DIVERGED_SHARE}


def grid_need(rows: Sequence[Mapping[str, Any]], cells: Sequence[PairedCell]) -> dict[str, Any]:
  """The more pairs the undecided points need, as runs and minutes: a pair at a point is one run
  per arm (a fine-tune, or at a pretraining point a pretraining run); minutes from the mean wall
  time of the study's records of the same stage and model."""
  wall: dict[tuple, list[float]] = {}
  for r in rows:
    wall.setdefault((r.get("stage"), r.get("model")), []).append(float(r.get("wall_s") or 0.0))
  runs, seconds = 0, 0.0
  for c in cells:
    for p in c.points:
      if p.verdict == "undecided" and p.pairs_needed and c.verdict != "cannot_be_judged":
        w = wall.get((c.stage, c.model), [0.0])
        runs += 2 * p.pairs_needed
        seconds += 2 * p.pairs_needed * sum(w) / len(w)
  return {**verdicts.grid_need(cells), "runs": runs, "minutes": seconds / 60}


def curve_summary(config: ConfigDict, lines: Sequence[Mapping[str, Any]], keep: set[str]) -> dict[str, Any]:
  """The learning curves' figure numbers and budget checks per stage ({} without curves), of the
  students' runs in `keep` (the cell ids analysed: random subsets, not diverged)."""
  lines = [c for c in lines if c.get("cell_id") in keep and not verdicts.is_teacher(c)]
  if not lines:
    return {}
  margin = float(config.study.margin)
  return {stage: {"figure": curves_lib.figure_curves(lines, stage),
                  "budget": curves_lib.budget_check(lines, margin, stage)}
          for stage in ("pretrain", "finetune") if any(c.get("stage") == stage for c in lines)}


def selection_summary(config: ConfigDict, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Per stage ("finetune", "pretrain"): `selection_effects` of the plain students' records over all
  models ("all") and per model ("by_model"); {} when the records hold one selection only."""
  students = [r for r in rows if not verdicts.is_teacher(r)]
  if len({r.get("selection", RANDOM) for r in students}) < 2:
    return {}
  kw = dict(arm="plain", bootstrap=int(config.study.bootstrap), seed=int(config.seed))
  out = {}
  for stage in ("finetune", "pretrain"):
    staged = [r for r in students if r.get("stage") == stage]
    if not staged:
      continue
    models = sorted({r["model"] for r in staged}, key=lambda m: min(int(r.get("params") or 0)
                                                                   for r in staged if r["model"] == m))
    out[stage] = {"all": selection_effects(staged, stage=stage, **kw),
                  "by_model": {m: selection_effects([r for r in staged if r["model"] == m], stage=stage, **kw)
                               for m in models}}
  return out


def analyze_records(config: ConfigDict, rows: Sequence[Mapping[str, Any]],
                    progress: bool = True, curves: Sequence[Mapping[str, Any]] = ()) -> StudyAnalysis:
  """Everything the records of a study support (see the module docstring). Records of diverged
  runs (a non-null `diverged_at`) are left out of the means, the pairs and the laws. `curves`: the
  study's curves.jsonl lines (the learning-curve summary; the law's points with
  config.study.law_points = "curves", `law_selection.law_table`)."""
  diverged = tuple(r for r in rows if r.get("diverged_at") is not None)
  rows = [r for r in rows if r.get("diverged_at") is None]
  # Dp images chosen by a pruning rule are another axis (jaxscale.study.selection_effects): the
  # arms' means, pairs and laws are those of the random subsets.
  chosen = selection_summary(config, rows)
  rows = [r for r in rows if r.get("selection", RANDOM) == RANDOM]
  forms = [laws.get(f) for f in selection_lib.law_candidates(str(config.study.law), str(config.study.law_points))]
  table = selection_lib.law_table(config, rows, curves)   # final errors, or curve points (study.law_points)
  need = max(len(f.params) for f in forms)
  n_runs = len(selection_lib.final_rows(table)["dp"])
  if n_runs < need + 1:
    raise JaxscaleError(f"only {n_runs} fine-tune records; the law "
                        f"'{'/'.join(f.name for f in forms)}' needs more than {need} per arm: run "
                        f"more cells or use a smaller law")
  law, selection, bts = selection_lib.select_law(config, table, progress)
  content, arms = selection_lib.fit_arms(config, table, law, selection, progress)
  measured = verdicts.measured_means(rows, int(config.seed))
  paired = verdicts.paired_cells(rows, int(config.seed), float(config.study.margin), family_rule(config),
                                 tuple(config.study.arms), diverged)
  rule = decision_rule(config, verdicts.levels_of(paired))
  rule["pairs_needed"] = grid_need(rows, paired)
  content.update(schema_version=SCHEMA_VERSION, paired=verdicts.paired_json(paired), decision_rule=rule,
                 diverged=[r.get("cell_id") for r in diverged],
                 law_selection=selection, law_check=_law_check_json(arms), backtests=bts[law],
                 exponents=selection_lib.exponents(config, table))
  summary = curve_summary(config, curves, {r.get("cell_id") for r in rows})
  if summary:
    content["budget_check"] = {stage: v["budget"] for stage, v in summary.items()}
  if chosen:
    content["selection_effects"] = chosen
  fits = laws.api.sanitize(content)
  form = laws.get(law)
  return StudyAnalysis(config=config, rows=tuple(rows), law=form.name, formula=form.formula,
                       arms=arms, measured=tuple(measured), paired=tuple(paired), rule=fits["decision_rule"],
                       diverged=tuple(r.get("cell_id") for r in diverged),
                       selection=selection_lib.selection_of(fits["law_selection"]),
                       crossings=selection_lib.crossings_of(fits["boundaries"]),
                       exponents=selection_lib.exponents_of(fits["exponents"]), fits=fits, curves=summary,
                       selection_effects=chosen)


def analyze_study(config: ConfigDict, workdir: str, progress: bool = True) -> StudyAnalysis:
  """Analyses the study in `workdir` (its records.jsonl) and writes its fits.json."""
  where = records.workdir_paths(workdir)
  path = where["records"]
  rows = records.read(path)
  if not verdicts.student_rows(rows, "finetune"):
    raise JaxscaleError(f"{path} has no fine-tune records; run `jaxscale study` on this workdir first")
  lines = [c for c in records.read(where["curves"]) if c.get("stage") in ("pretrain", "finetune")]
  result = analyze_records(config, rows, progress=progress, curves=lines)
  # fits.json is derived from the records, so it is rebuilt (atomically) every time.
  laws.write_fits(where["fits"], result.fits, force=True)
  return result
