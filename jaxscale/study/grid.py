"""Expands a study config into cells with deterministic ids, in dependency order.

A study is ``models x Dp x Df x arms x seeds`` plus one teacher. Pretraining is shared: each
(model, Dp, arm, seed) is pretrained once and all its Df fine-tunes start from that checkpoint;
the teacher (by default the smallest rung trained on the largest Dp) is trained once and guides
every distilled pretraining.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from ml_collections import ConfigDict

from jaxscale.errors import JaxscaleError

TEACHER, PRETRAIN, FINETUNE = "teacher", "pretrain", "finetune"


@dataclasses.dataclass(frozen=True)
class Cell:
  """One stage of one run of the study.

  Attributes:
    kind: "teacher" | "pretrain" | "finetune".
    model: registered model name (the student, or the teacher for kind "teacher").
    dp: pretraining images.
    df: downstream images (0 for teacher and pretrain cells).
    arm: "plain" | "distilled" ("plain" for the teacher).
    seed: run seed.
  """
  kind: str
  model: str
  dp: int
  arm: str
  seed: int
  df: int = 0

  @property
  def id(self) -> str:
    """A stable, readable id, e.g. ``ft-vit_tiny_s-dp1000-distilled-s0-df300``."""
    base = f"{self.model}-dp{self.dp}-{self.arm}-s{self.seed}"
    if self.kind == TEACHER:
      return f"teacher-{self.model}-dp{self.dp}-s{self.seed}"
    if self.kind == PRETRAIN:
      return f"pt-{base}"
    return f"ft-{base}-df{self.df}"

  @property
  def stage(self) -> str:
    """The training stage the cell runs ("pretrain" for teacher cells)."""
    return FINETUNE if self.kind == FINETUNE else PRETRAIN

  def pretrain_cell(self) -> "Cell":
    """The pretraining cell this fine-tune starts from."""
    return dataclasses.replace(self, kind=PRETRAIN, df=0)


def teacher_of(study: ConfigDict) -> Cell:
  """The teacher cell: `study.teacher_model` ("" = first rung) on `teacher_dp` (0 = max Dp)."""
  model = study.teacher_model or study.models[0]
  dp = study.teacher_dp or max(study.dp)
  return Cell(TEACHER, model, int(dp), "plain", int(study.seeds[0]))


def expand(config: ConfigDict) -> list[Cell]:
  """All cells of the study in an order where every cell comes after what it needs.

  Order: the teacher (if any arm is distilled), then per (model, Dp, arm, seed) its pretraining
  followed by its fine-tunes, smaller models and Dp first so partial studies are useful early.
  """
  s = config.study
  for field in ("models", "dp", "df", "arms", "seeds"):
    if len(s[field]) == 0:
      raise JaxscaleError(f"the study grid is empty: config.study.{field} has no values; give at least one")
  if len(set(s.dp)) != len(s.dp) or len(set(s.df)) != len(s.df) or len(set(s.models)) != len(s.models):
    raise JaxscaleError("config.study.models, .dp and .df must not repeat values")
  cells: list[Cell] = []
  if "distilled" in s.arms:
    cells.append(teacher_of(s))
  for model in s.models:
    for dp in sorted(s.dp):
      for arm in s.arms:
        for seed in s.seeds:
          pre = Cell(PRETRAIN, model, int(dp), arm, int(seed))
          cells.append(pre)
          cells.extend(dataclasses.replace(pre, kind=FINETUNE, df=int(df)) for df in sorted(s.df))
  return cells


def cell_config(config: ConfigDict, cell: Cell, cells_dir: str) -> ConfigDict:
  """The single-run config of `cell`: the study config with model, sizes, seed and teacher set."""
  c = ConfigDict(config.to_dict())
  c.model.name = cell.model
  c.pretrain.size = cell.dp
  c.seed = cell.seed
  if cell.kind == FINETUNE:
    c.finetune.size = cell.df
    c.finetune.init_checkpoint = f"{cells_dir}/{cell.pretrain_cell().id}/pretrain"
  if cell.arm == "distilled":
    teacher = teacher_of(config.study)
    c.distill.teacher_checkpoint = f"{cells_dir}/{teacher.id}/pretrain"
    c.distill.teacher_model = teacher.model
  else:
    c.distill.teacher_checkpoint = ""
    c.distill.teacher_model = ""
  return c


def count(cells: Iterable[Cell]) -> dict[str, int]:
  """Cells per kind, e.g. ``{"teacher": 1, "pretrain": 24, "finetune": 72}``."""
  out = {TEACHER: 0, PRETRAIN: 0, FINETUNE: 0}
  for cell in cells:
    out[cell.kind] += 1
  return out
