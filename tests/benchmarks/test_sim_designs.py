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
  _, runs = sim_designs.study(np.random.default_rng(0), len(s.seeds), 1, 0)
  assert runs == len(grid.expand(c))                      # round 1: the grid the runner trains
  name, n0, looks, budget = sim_designs.DESIGNS[0]          # the earlier default: 3 seeds + a round
  c.study.seeds, c.study.adaptive, c.study.max_runs = (0, 1, 2), True, budget
  _, runs = sim_designs.study(np.random.default_rng(0), n0, looks, budget)
  assert len(grid.expand(c)) < runs <= len(grid.expand(c)) + budget


def test_the_default_is_the_design_the_stated_criterion_chooses():
  """The default's seeds and looks are the cheapest simulated design deciding >= 10 of 12 cells in
  >= 90% of studies (4 seeds reach about 58%, 5 about 99%, so 30 pairs of studies separate them)."""
  s = config_lib.load(DEFAULT).study
  best = sim_designs.choose(sim_designs.compare(np.random.default_rng(2), 30))
  looks = s.max_rounds if s.adaptive else 1
  assert best is not None and (best["n0"], best["looks"]) == (len(s.seeds), looks)
  assert best["budget"] == (s.max_runs if s.adaptive else 0)


def test_choose_takes_the_cheapest_design_meeting_the_criterion():
  rows = [dict(name="a", runs=500, share=0.5), dict(name="b", runs=900, share=0.95),
          dict(name="c", runs=700, share=0.92)]
  assert sim_designs.choose(rows)["name"] == "c"
  assert sim_designs.choose([dict(name="a", runs=1, share=0.1)]) is None


def test_more_pairs_decide_more_cells():
  rng = np.random.default_rng(1)
  def decided(n0):
    return np.mean([sum(v != "cannot_tell" for v in sim_designs.study(rng, n0, 1, 0)[0].values())
                    for _ in range(5)])
  assert decided(3) < decided(8)
