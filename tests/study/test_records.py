"""records.jsonl: whole-line appends, one record per cell, torn last lines moved aside, a full disk
leaving the finished records intact."""

import errno
import json
import logging
import os

import pytest

from jaxscale.errors import JaxscaleError
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


def _line(**fields):
  return json.dumps({"stage": "finetune", "eval_error": 0.5, "wall_s": 1.0, **fields}) + "\n"


def test_a_second_record_of_a_cell_is_refused(tmp_path):
  path = str(tmp_path / "records.jsonl")
  records.append(path, {"stage": "finetune", "cell_id": "a", "eval_error": 0.5})
  with pytest.raises(JaxscaleError, match="already holds a record of finetune cell a"):
    records.append(path, {"stage": "finetune", "cell_id": "a", "eval_error": 0.5})
  records.append(path, {"stage": "pretrain", "cell_id": "a", "eval_error": 0.4})  # `jaxscale train`: one per stage
  # another writer's line is seen too, not only what this process appended
  with open(path, "a") as f:
    f.write(_line(cell_id="b"))
  with pytest.raises(JaxscaleError, match="cell b"):
    records.append(path, {"stage": "finetune", "cell_id": "b", "eval_error": 0.5})
  assert len(records.read(path)) == 3


def test_repeated_records_are_dropped_with_one_warning(tmp_path, caplog):
  path = tmp_path / "records.jsonl"
  lines = [_line(cell_id=c, eval_error=e) for c, e in (("a", 0.5), ("b", 0.25))]
  path.write_text("".join(lines) + lines[0].replace('"wall_s": 1.0', '"wall_s": 7.0') + lines[1])
  with caplog.at_level(logging.WARNING, logger="jaxscale"):
    rows = records.read(str(path))
  assert [(r["cell_id"], r["wall_s"]) for r in rows] == [("a", 1.0), ("b", 1.0)]
  warnings = [r.getMessage() for r in caplog.records]
  assert len(warnings) == 1 and "dropped 2 record(s)" in warnings[0] and "lines 3, 4" in warnings[0]


def test_two_results_of_one_cell_are_refused(tmp_path):
  path = tmp_path / "records.jsonl"
  path.write_text(_line(cell_id="a", eval_error=0.5) + _line(cell_id="b") + _line(cell_id="a", eval_error=0.4))
  with pytest.raises(JaxscaleError, match=r"lines 1 and 3 hold different results for finetune cell a "
                                          r"\(eval_error 0.5 vs 0.4\)") as e:
    records.read(str(path))
  assert "\n" not in str(e.value)


def test_a_study_moves_a_torn_last_line_aside_once(tmp_path, caplog):
  path = tmp_path / "records.jsonl"
  path.write_text(_line(cell_id="a") + '{"cell_id": "b", "eval_')
  with caplog.at_level(logging.WARNING, logger="jaxscale"):
    done = records.resume(str(path))
    records.append(str(path), {"stage": "finetune", "cell_id": "c"})
    records.append(str(path), {"stage": "finetune", "cell_id": "d"})
  assert set(done) == {"a"}
  assert [json.loads(x)["cell_id"] for x in path.read_text().splitlines()] == ["a", "c", "d"]
  aside = [p for p in tmp_path.iterdir() if p.name.startswith("records.jsonl.torn-")]
  assert len(aside) == 1 and aside[0].read_text() == '{"cell_id": "b", "eval_'
  said = [r.getMessage() for r in caplog.records]
  assert len(said) == 1 and "moved it to" in said[0] and "line 2" in said[0]


def test_an_inner_bad_line_is_refused(tmp_path):
  path = tmp_path / "records.jsonl"
  path.write_text(_line(cell_id="a") + '{"cell_id": "b", "eval_\n' + _line(cell_id="c"))
  with pytest.raises(JaxscaleError, match="line 2 is not valid JSON"):
    records.read(str(path))


def test_a_full_disk_leaves_the_records_intact(tmp_path, monkeypatch):
  path = tmp_path / "records.jsonl"
  records.append(str(path), {"stage": "finetune", "cell_id": "a"})
  before = path.read_bytes()
  real_write = os.write

  def half_write(fd, data):  # what a nearly full disk does: takes part of the line
    return real_write(fd, data[: len(data) // 2])
  monkeypatch.setattr(os, "write", half_write)
  with pytest.raises(JaxscaleError, match=r"No space left on device \(ENOSPC\); its 1 earlier records are "
                                          r"intact") as e:
    records.append(str(path), {"stage": "finetune", "cell_id": "b", "eval_error": 0.5})
  assert str(path) in str(e.value) and path.read_bytes() == before

  def no_space(fd, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(os, "write", no_space)
  with pytest.raises(JaxscaleError, match="ENOSPC"):
    records.append(str(path), {"stage": "finetune", "cell_id": "b"})
  monkeypatch.setattr(os, "write", real_write)
  records.append(str(path), {"stage": "finetune", "cell_id": "b"})
  assert [r["cell_id"] for r in records.read(str(path))] == ["a", "b"]
