"""Adaptive rounds: the next-round rule, and `jaxscale suggest` on a synthetic study (no training)."""

import json
import os
import sys

import pytest

from jaxscale import cli
from jaxscale.study import adaptive, runner

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "report"))
import synthetic  # noqa: E402


def test_next_pairs_rule():
  sizes = adaptive.sample_sizes(4, 5)
  assert sizes == (4, 8, 16, 32, 64)
  assert adaptive.next_pairs(4, "undecided", sizes) == 4        # one size up: 8
  assert adaptive.next_pairs(16, "undecided", sizes) == 16      # 32
  assert adaptive.next_pairs(5, "undecided", sizes) == 3        # off the sizes (a budget cut): the next, 8
  assert adaptive.next_pairs(64, "undecided", sizes) == 0       # at the largest
  assert adaptive.next_pairs(4, "helps", sizes) == 0            # decided
  assert adaptive.next_pairs(4, "no_practical_difference", sizes) == 0
  assert adaptive.next_pairs(1, "undecided", (1, 2, 4)) == 3    # 2 pairs cannot decide: to 4


def test_short_why_groups_points_by_comparison():
  text = adaptive.short_why([("distilled_vs_plain", 0), ("distilled_vs_plain", 1000),
                             ("distilled_vs_plain", 100), ("distilled_vs_smoothed", 300)])
  assert text == ("distilled vs plain: pretraining task, Df 100, Df 1,000; "
                  "distilled vs smoothed: Df 300 undecided")


@pytest.fixture()
def workdir(tmp_path):
  w = tmp_path / "study"
  c = synthetic.write_study(str(w), bootstrap=0)
  with open(w / "study.json", "w") as f:    # the hash the runner gives this config
    json.dump({"hash": runner.study_hash(c), "config": c.to_dict()}, f, default=str)
  return w, c


def test_next_round_continues_the_seeds_and_says_why(workdir):
  w, c = workdir
  rows = synthetic.rows()
  additions, cells, alpha = adaptive.next_round(c, rows)
  # BH over the design's 64 points at q = 0.05 / max_rounds: alpha = q·k/64, k the points that differ
  k = sum(p.verdict in ("helps", "hurts") for c_ in cells for p in c_.points)
  assert additions and k and alpha == pytest.approx(0.05 / c.study.max_rounds * k / 64)
  for a in additions:
    assert a.seeds[0] == max(c.study.seeds) + 1 and list(a.seeds) == list(range(a.seeds[0], a.seeds[0] + len(a.seeds)))
    assert len(a.seeds) == max(a.finetunes.values()) and a.why and len(a.undecided) == len(a.why)
    n0 = len(c.study.seeds)
    assert all(n0 + n in adaptive.sample_sizes(n0, c.study.max_rounds) for n in a.finetunes.values())
  # every undecided point below the largest size gets pairs at its (model, Dp)
  top = adaptive.sample_sizes(len(c.study.seeds), c.study.max_rounds)[-1]
  wanted = {(c_.model, p.dp) for c_ in cells for p in c_.points if p.verdict == "undecided" and p.n_pairs < top}
  assert wanted == {(a.model, a.dp) for a in additions}
  text = adaptive.describe(additions, cells, alpha, tuple(c.study.arms))
  assert "Next round (not run)" in text and f"{adaptive.round_runs(additions, c.study.arms):,} runs" in text


def test_suggest_prints_the_next_round_and_writes_nothing(workdir, capsys):
  w, _ = workdir
  before = sorted(os.listdir(w))
  assert cli.main(["suggest", "--workdir", str(w)]) == 0
  out = capsys.readouterr().out
  assert "Next round (not run)" in out and "undecided" in out
  assert sorted(os.listdir(w)) == before


def test_suggest_bad_inputs_are_one_line_errors(workdir, tmp_path, capsys):
  w, _ = workdir
  empty = tmp_path / "empty"
  empty.mkdir()
  assert cli.main(["suggest", "--workdir", str(empty)]) == 2           # no study
  os.remove(w / "records.jsonl")
  assert cli.main(["suggest", "--workdir", str(w)]) == 2               # no records
  smoke = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "smoke.py")
  synthetic.write_study(str(w), bootstrap=0)
  assert cli.main(["suggest", "--workdir", str(w), "--config", smoke]) == 2   # another config
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.strip()]
  assert len(lines) == 3 and "no study" in lines[0] and "no records" in lines[1] and "not the config" in lines[2]


def test_one_arm_cannot_be_adaptive():
  c = synthetic.config()
  c.study.arms = ("plain",)
  with pytest.raises(Exception, match="needs 'plain' and 'distilled'"):
    adaptive.next_round(c, synthetic.rows())


def test_new_seeds_continue_the_students_seeds_not_the_teachers():
  c = synthetic.config()
  rows = [dict(r, seed=99) if r["cell_id"].startswith("teacher-") else r for r in synthetic.rows()]
  additions, _, _ = adaptive.next_round(c, rows)
  assert additions and {a.seeds[0] for a in additions} == {max(c.study.seeds) + 1}
