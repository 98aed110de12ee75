"""benchmarks/sim_designs.py: its family and run counts are the default study's, and more seed pairs
decide more cells."""

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import sim_designs  # noqa: E402

from jaxscale import config as config_lib  # noqa: E402
from jaxscale.study import grid, verdicts  # noqa: E402

DEFAULT = str(pathlib.Path(__file__).resolve().parents[2] / "configs" / "default.py")


def test_the_simulated_design_is_the_default_study():
  c = config_lib.load(DEFAULT)
  s = c.study
  assert (sim_designs.MODELS, sim_designs.DPS, sim_designs.KINDS - 1, sim_designs.ARMS) == (
      len(s.models), len(s.dp), len(s.df), len(s.arms))
  assert sim_designs.COMPARISONS * sim_designs.MODELS * sim_designs.DPS * sim_designs.KINDS == \
      verdicts.family_size(s.arms, s.models, s.dp, s.df)
  name, n0, looks, budget = sim_designs.DESIGNS[0]
  assert (n0, looks, budget) == (len(s.seeds), s.max_rounds, s.max_runs)
  _, runs = sim_designs.study(np.random.default_rng(0), n0, 1, 0)
  assert runs == len(grid.expand(c))                      # round 1: the grid the runner trains
  _, runs = sim_designs.study(np.random.default_rng(0), n0, looks, budget)
  assert len(grid.expand(c)) < runs <= len(grid.expand(c)) + budget


def test_more_pairs_decide_more_cells():
  rng = np.random.default_rng(1)
  def decided(n0):
    return np.mean([sum(v != "cannot_tell" for v in sim_designs.study(rng, n0, 1, 0)[0].values())
                    for _ in range(5)])
  assert decided(3) < decided(8)
