"""Expands a study config into cells and packs the cells into groups, in dependency order.

A study is ``models x Dp x Df x arms x seeds`` plus one teacher. Pretraining is shared: each
(model, Dp, arm, seed) is pretrained once and all its Df fine-tunes start from that checkpoint;
the teacher (by default the smallest rung trained on the largest Dp) is trained once and guides
every distilled pretraining.

Cells that share a model and a step count are trained together as one **group** (one compiled,
vmapped program): the teacher alone; pretraining per (model, Dp) over arms x seeds; fine-tuning
per (model, Df) over Dp x arms x seeds. ``config.engine.group_size`` splits larger groups.
"""

from __future__ import annotations

import dataclasses
import os
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


@dataclasses.dataclass(frozen=True)
class Group:
  """Cells trained together: one model, one stage, one subset size (hence one step count).

  Attributes:
    kind: "teacher" | "pretrain" | "finetune".
    model: the model of every cell.
    size: the subset size (Dp for teacher and pretrain groups, Df for fine-tune groups).
    cells: the cells, in a fixed order.
    part: which slice of a group split by ``config.engine.group_size`` (-1 = not split).
  """
  kind: str
  model: str
  size: int
  cells: tuple[Cell, ...]
  part: int = -1

  @property
  def id(self) -> str:
    """A stable, readable id, e.g. ``pt-vit_tiny_s-dp1000`` or ``ft-vit_tiny_s-df300-part1``."""
    if self.kind == TEACHER:
      return self.cells[0].id
    base = f"{'pt' if self.kind == PRETRAIN else 'ft'}-{self.model}-{'dp' if self.kind == PRETRAIN else 'df'}{self.size}"
    return base if self.part < 0 else f"{base}-part{self.part}"

  @property
  def stage(self) -> str:
    return self.cells[0].stage


def groups(config: ConfigDict) -> list[Group]:
  """The study's groups in dependency order: the teacher, every pretraining, every fine-tuning."""
  cells = expand(config)
  limit = int(config.engine.group_size)
  packed: dict[tuple, list[Cell]] = {}
  for cell in cells:
    size = cell.df if cell.kind == FINETUNE else cell.dp
    packed.setdefault((cell.kind, cell.model, size), []).append(cell)
  rank = {TEACHER: 0, PRETRAIN: 1, FINETUNE: 2}
  out = []
  for (kind, model, size), members in sorted(packed.items(), key=lambda kv: (rank[kv[0][0]], kv[0][1:])):
    parts = [members[i:i + limit] for i in range(0, len(members), limit)]
    for i, part in enumerate(parts):
      out.append(Group(kind, model, size, tuple(part), i if len(parts) > 1 else -1))
  order = {m: i for i, m in enumerate(config.study.models)}
  out.sort(key=lambda g: (rank[g.kind], order.get(g.model, -1), g.size, g.part))
  return out


def run_dir(cells_dir: str, cell: Cell) -> str:
  """Where a cell's finished parameters live (pretraining and teacher cells)."""
  return os.path.join(cells_dir, cell.id, cell.stage)


def kd_alpha(config: ConfigDict, cell: Cell) -> float:
  """The KD weight of `cell` during its own stage (0 for the plain arm, the teacher, or another stage)."""
  if cell.arm != "distilled" or config.distill.stage not in (cell.stage, "both"):
    return 0.0
  return float(config.distill.alpha)


def group_config(config: ConfigDict, group: Group, cells_dir: str) -> ConfigDict:
  """The config a group trains with: the study config with its model and its teacher set."""
  c = ConfigDict(config.to_dict())
  c.model.name = group.model
  if any(kd_alpha(config, cell) > 0 for cell in group.cells):
    teacher = teacher_of(config.study)
    c.distill.teacher_checkpoint = run_dir(cells_dir, teacher)
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
