"""Expands a study config into cells and packs the cells into groups, in dependency order.

A study is ``models x Dp x Df x arms x seeds`` plus one teacher. Pretraining is shared: each
(model, Dp, arm, seed) is pretrained once and all its Df fine-tunes start from that checkpoint;
the teacher (by default the smallest rung trained on the largest Dp) is trained once and guides
every distilled pretraining.

Cells that share a stage, a model and whether they distil are trained together as one **group**
(one compiled, vmapped program): pretraining per (model, arm) over Dp x seeds (the smoothed control
in the distilled arm's group: the same KD loss, its teacher's outputs uniform), the teacher joining
the plain group of its model; fine-tuning per model over Dp x Df x arms x seeds. A group's program
runs the teacher's forward only when one of its runs distils, so plain runs never pay for it. Its
cells need not share a step count (a budget set in epochs gives every subset size its own): the group
trains as long as its longest cell and each run stops at its own last step, so a model's pretraining
is two programs and its fine-tuning one whatever the budget rule. ``config.engine.group_size`` splits
larger groups into equal parts, the cells sorted by step count first so that runs of similar length
share a part (little of a part's length is spent on runs that have finished).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Iterable

from ml_collections import ConfigDict

from jaxscale.errors import JaxscaleError
from jaxscale.train.steps import num_train_steps

TEACHER, PRETRAIN, FINETUNE = "teacher", "pretrain", "finetune"
# Arms trained with the KD loss (weight config.distill.alpha, temperature T, in config.distill.stage):
# "distilled" against the teacher, "smoothed" against a uniform teacher (label smoothing).
KD_ARMS = ("distilled", "smoothed")


@dataclasses.dataclass(frozen=True)
class Cell:
  """One stage of one run of the study.

  Attributes:
    kind: "teacher" | "pretrain" | "finetune".
    model: registered model name (the student, or the teacher for kind "teacher").
    dp: pretraining images.
    df: downstream images (0 for teacher and pretrain cells).
    arm: "plain" | "distilled" | "smoothed" ("plain" for the teacher; see ``config.ARMS``).
    seed: run seed.
    selection: how the Dp images were chosen (``jaxscale.data.subsets.SELECTIONS``; "random" for
      the teacher); a fine-tune has its pretraining's.
  """
  kind: str
  model: str
  dp: int
  arm: str
  seed: int
  df: int = 0
  selection: str = "random"

  @property
  def id(self) -> str:
    """A stable, readable id, e.g. ``ft-vit_tiny_s-dp1000-distilled-s0-df300`` (a selection other than
    random after the Dp: ``pt-vit_tiny_s-dp1000-prototypes_hard-plain-s0``)."""
    chosen = "" if self.selection == "random" else f"-{self.selection}"
    base = f"{self.model}-dp{self.dp}{chosen}-{self.arm}-s{self.seed}"
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


def needs_teacher(study: ConfigDict) -> bool:
  """Whether the study trains a teacher: an arm trains with the KD loss (a smoothed run trains in the
  distilled arm's program, beside its teacher's forward, with the teacher's outputs replaced)."""
  return any(arm in KD_ARMS for arm in study.arms) or scores_from_teacher(study)


def scores_from_teacher(study: ConfigDict) -> bool:
  """Whether a selection ranks the Dp images by difficulty scores of the teacher (no other backbone named)."""
  return any(sel != "random" for sel in study.selection) and not study.scores.backbone


def selects_by_scores(cell: Cell) -> bool:
  """Whether `cell` trains on a subset chosen by difficulty scores (a pretraining of a prototype rule)."""
  return cell.kind == PRETRAIN and cell.selection != "random"


def teacher_of(study: ConfigDict) -> Cell:
  """The teacher cell: `study.teacher_model` ("" = first rung) on `teacher_dp` (0 = max Dp), seed
  `teacher_seed` (independent of `study.seeds`, so a study rerun with other seeds keeps its teacher)."""
  model = study.teacher_model or study.models[0]
  dp = study.teacher_dp or max(study.dp)
  return Cell(TEACHER, model, int(dp), "plain", int(study.teacher_seed))


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
  if needs_teacher(s):
    cells.append(teacher_of(s))
  for model in s.models:
    for dp in sorted(s.dp):
      for selection, arm in itertools.product(s.selection, s.arms):
        for seed in s.seeds:
          pre = Cell(PRETRAIN, model, int(dp), arm, int(seed), selection=selection)
          cells.append(pre)
          cells.extend(dataclasses.replace(pre, kind=FINETUNE, df=int(df)) for df in sorted(s.df))
  return cells


@dataclasses.dataclass(frozen=True)
class Group:
  """Cells trained together: one stage, one model, one program.

  Attributes:
    stage: "pretrain" (teacher cells included) | "finetune".
    model: the model of every cell.
    steps: the group's training steps: its longest cell's (each cell trains its own, :func:`cell_steps`).
    distils: whether a cell has a KD weight > 0 (the program then runs the teacher's forward).
    cells: the cells, in a fixed order (by step count, then in the order given).
    part: which slice of a group split by ``config.engine.group_size`` (-1 = not split).
    scored: its cells pretrain on subsets chosen by difficulty scores (computed before it trains).
  """
  stage: str
  model: str
  steps: int
  distils: bool
  cells: tuple[Cell, ...]
  part: int = -1
  scored: bool = False

  @property
  def id(self) -> str:
    """A stable, readable id, e.g. ``pt-vit_tiny_s-kd-800steps`` or ``ft-vit_tiny_s-150steps-part1``
    (``pt-vit_tiny_s-scored-800steps`` for subsets chosen by scores)."""
    kinds = ("kd-" if self.distils else "") + ("scored-" if self.scored else "")
    base = f"{'pt' if self.stage == PRETRAIN else 'ft'}-{self.model}-{kinds}{self.steps}steps"
    return base if self.part < 0 else f"{base}-part{self.part}"


def cell_steps(config: ConfigDict, cell: Cell) -> int:
  """Training steps of `cell` (the step rule of its stage at its subset size)."""
  return num_train_steps(config[cell.stage].optim, cell.df if cell.kind == FINETUNE else cell.dp)


def groups(config: ConfigDict, cells: Iterable[Cell] | None = None) -> list[Group]:
  """The study's groups in dependency order: plain pretraining (with the teacher), distilled
  pretraining, fine-tuning; smaller models and step counts first within each. `cells`: pack these
  instead of the config's grid (an adaptive round's cells, in the order `expand` would give them).
  A group's cells may differ in step count (:class:`Group`); they are sorted by it (stably)."""
  cells = expand(config) if cells is None else list(cells)
  limit = int(config.engine.group_size)
  packed: dict[tuple, list[Cell]] = {}
  for cell in cells:
    key = (cell.stage, cell.model, kd_alpha(config, cell) > 0, selects_by_scores(cell))
    packed.setdefault(key, []).append(cell)
  order = {m: i for i, m in enumerate(config.study.models)}
  out = []
  for (stage, model, distils, scored), members in packed.items():
    steps = {c: cell_steps(config, c) for c in members}
    members = sorted(members, key=steps.__getitem__)   # shorter runs together: a part's length is its longest
    # Equal parts (96 runs at limit 64: 48 + 48, not 64 + 32) share one program shape: one compile.
    per = -(-len(members) // -(-len(members) // limit))
    parts = [members[i:i + per] for i in range(0, len(members), per)]
    for i, part in enumerate(parts):
      out.append(Group(stage, model, max(steps[c] for c in part), distils, tuple(part),
                       i if len(parts) > 1 else -1, scored))
  # A distilling group needs the teacher, which is in a plain pretraining group, and so do subsets
  # chosen by the teacher's scores: plain pretraining first, then distilled or scored pretraining,
  # then fine-tuning (which needs its pretraining cells).
  rank = lambda g: (g.stage == FINETUNE, g.distils or g.scored)
  out.sort(key=lambda g: (rank(g), order.get(g.model, len(order)), g.model, g.steps, g.part))
  return out


def run_dir(cells_dir: str, cell: Cell) -> str:
  """Where a cell's finished parameters live (pretraining and teacher cells)."""
  return os.path.join(cells_dir, cell.id, cell.stage)


def kd_alpha(config: ConfigDict, cell: Cell) -> float:
  """The KD weight of `cell` during its own stage (0 for the plain arm, the teacher, or another stage);
  the smoothed arm has the distilled arm's weight."""
  if cell.arm not in KD_ARMS or config.distill.stage not in (cell.stage, "both"):
    return 0.0
  return float(config.distill.alpha)


def uniform_teacher(config: ConfigDict, cell: Cell) -> bool:
  """Whether `cell` trains against a uniform teacher (softmax of constant logits) instead of the
  teacher: a smoothed cell in a stage where it distils."""
  return cell.arm == "smoothed" and kd_alpha(config, cell) > 0


def group_config(config: ConfigDict, group: Group, cells_dir: str) -> ConfigDict:
  """The config a group trains with: the study config with its model and its teacher set."""
  c = ConfigDict(config.to_dict())
  c.model.name = group.model
  if group.distils:
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
