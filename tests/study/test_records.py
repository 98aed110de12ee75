"""records.jsonl appends are whole lines; torn lines are skipped and terminated."""

import json

from jaxscale.study import records


def test_append_and_read(tmp_path):
  path = str(tmp_path / "sub" / "records.jsonl")
  records.append(path, {"cell_id": "a", "eval_error": 0.5})
  records.append(path, {"cell_id": "b", "eval_error": 0.25})
  rows = records.read(path)
  assert [r["cell_id"] for r in rows] == ["a", "b"]
  assert set(records.by_cell(path)) == {"a", "b"}


def test_torn_last_line_is_skipped_and_not_glued(tmp_path):
  path = tmp_path / "records.jsonl"
  path.write_text(json.dumps({"cell_id": "a"}) + "\n" + '{"cell_id": "b", "eval_')
  assert [r["cell_id"] for r in records.read(str(path))] == ["a"]
  records.append(str(path), {"cell_id": "c"})
  assert [r["cell_id"] for r in records.read(str(path))] == ["a", "c"]


def test_missing_file_reads_empty(tmp_path):
  assert records.read(str(tmp_path / "none.jsonl")) == []
