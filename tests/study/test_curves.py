"""curves.jsonl: one line per recorded run, beside records.jsonl, written before its record and once."""

import json
from types import SimpleNamespace

from jaxscale.study import records


def _record(cell_id):
  return {"stage": "pretrain", "cell_id": cell_id, "model": "m", "params": 10, "dp": 100, "df": 0,
          "arm": "plain", "selection": "random", "distilled": False, "seed": 0, "steps": 20, "batch_size": 32,
          "eval_error": 0.5}


def test_curves_are_written_beside_the_records_once(tmp_path):
  path = str(tmp_path / "records.jsonl")
  points = [{"step": 10, "examples": 320, "eval_error": 0.7}, {"step": 20, "examples": 640, "eval_error": 0.5}]
  cells = [SimpleNamespace(id="a"), SimpleNamespace(id="b"), SimpleNamespace(id="c")]
  results = [{"curve": points}, {"curve": points[1:]}, {}]   # c: a group finished before curves existed
  make = lambda cell, result: _record(cell.id)
  # a process killed after a's curve but before its record: the rerun records a without a second curve
  records.jsonl.append(records.curves_path(path), records.curve(_record("a"), points))
  records.add_results(path, {}, cells, results, make)
  lines = [json.loads(l) for l in (tmp_path / "curves.jsonl").read_text().splitlines()]
  assert [c["cell_id"] for c in lines] == ["a", "b"]
  assert lines[0]["points"] == points and lines[1]["points"] == points[1:]
  assert {k: lines[1][k] for k in records.CURVE_FIELDS} == {k: _record("b")[k] for k in records.CURVE_FIELDS}
  assert [r["cell_id"] for r in records.read(path)] == ["a", "b", "c"]
  records.add_results(path, records.by_cell(path), cells, results, make)   # all recorded: nothing written
  assert len((tmp_path / "curves.jsonl").read_text().splitlines()) == 2
