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
import os
from typing import Any, Mapping, Sequence

from ml_collections import ConfigDict

from jaxscale import laws
from jaxscale.errors import JaxscaleError
from jaxscale.study import law_selection as selection_lib
from jaxscale.study import records, verdicts
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
  selection: LawSelection
  crossings: tuple[LawCrossing, ...]
  exponents: tuple[Exponent, ...]
  fits: dict[str, Any]


def _law_check_json(arms: Mapping[str, ArmFit]) -> dict[str, Any]:
  return {a.arm: {"passed": not a.failed, "reasons": list(a.failed), "r2_log_cells": a.r2_cells,
                  "r2_log_rows": a.statistics.get("r2_log"),
                  "exponent_range": list(selection_lib.EXPONENT_RANGE), "checks": list(a.checks)}
          for a in arms.values()}


def analyze_records(config: ConfigDict, rows: Sequence[Mapping[str, Any]],
                    progress: bool = True) -> StudyAnalysis:
  """Everything the records of a study support (see the module docstring)."""
  # The smoothed control (arm "smoothed", distilled False) is not analysed here yet: its rows must
  # not join the plain arm's means, pairs and law.
  rows = [r for r in rows if r.get("arm") != "smoothed"]
  # Dp images chosen by a pruning rule are another axis (jaxscale.study.selection_effects): the
  # arms' means, pairs and laws are those of the random subsets.
  rows = [r for r in rows if r.get("selection", "random") == "random"]
  table = selection_lib.finetune_table(rows)
  forms = [laws.get(f) for f in selection_lib.law_candidates(str(config.study.law))]
  need = max(len(f.params) for f in forms)
  if len(table["dp"]) < need + 1:
    raise JaxscaleError(f"only {len(table['dp'])} fine-tune records; the law "
                        f"'{'/'.join(f.name for f in forms)}' needs more than {need} per arm: run "
                        f"more cells or use a smaller law")
  law, selection, bts = selection_lib.select_law(config, table, progress)
  content, arms = selection_lib.fit_arms(config, table, law, selection, progress)
  measured = verdicts.measured_means(rows, int(config.seed))
  paired = verdicts.paired_cells(rows, int(config.seed))
  content.update(schema_version=SCHEMA_VERSION, paired=verdicts.paired_json(paired),
                 law_selection=selection, law_check=_law_check_json(arms), backtests=bts[law],
                 exponents=selection_lib.exponents(config, table))
  fits = laws.api.sanitize(content)
  form = laws.get(law)
  return StudyAnalysis(config=config, rows=tuple(rows), law=form.name, formula=form.formula,
                       arms=arms, measured=tuple(measured), paired=tuple(paired),
                       selection=selection_lib.selection_of(fits["law_selection"]),
                       crossings=selection_lib.crossings_of(fits["boundaries"]),
                       exponents=selection_lib.exponents_of(fits["exponents"]), fits=fits)


def analyze_study(config: ConfigDict, workdir: str, progress: bool = True) -> StudyAnalysis:
  """Analyses the study in `workdir` (its records.jsonl) and writes its fits.json."""
  path = os.path.join(workdir, "records.jsonl")
  rows = records.read(path)
  if not verdicts.student_rows(rows, "finetune"):
    raise JaxscaleError(f"{path} has no fine-tune records; run `jaxscale study` on this workdir first")
  result = analyze_records(config, rows, progress=progress)
  # fits.json is derived from the records, so it is rebuilt (atomically) every time.
  laws.write_fits(os.path.join(workdir, "fits.json"), result.fits, force=True)
  return result
