"""benchmarks/compare_studies.py: cell verdicts of two runs side by side, counted."""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import compare_studies  # noqa: E402


def _write(tmp, name, verdicts):
  d = tmp / name
  d.mkdir()
  paired = [{"comparison": "distilled_vs_plain", "model": m, "params": 1000, "stage": "pretrain" if df == 0 else "finetune",
             "df": df, "verdict": v, "decided_dp": [800] if v != "cannot_tell" else [],
             "crossing": {"dp_star": 3900.0, "ci": [3500.0, 4400.0]} if v == "helps_below_dp_star" else None}
            for (m, df), v in verdicts.items()]
  (d / "fits.json").write_text(json.dumps({"paired": paired}))
  return str(d)


def test_counts_decided_and_same_cells(tmp_path, capsys):
  a = _write(tmp_path, "a", {("m1", 0): "helps_where_decided", ("m1", 100): "helps_where_decided",
                             ("m1", 300): "cannot_tell", ("m2", 100): "helps_below_dp_star"})
  b = _write(tmp_path, "b", {("m1", 0): "helps_where_decided", ("m1", 100): "cannot_tell",
                             ("m1", 300): "cannot_be_judged", ("m2", 100): "helps_below_dp_star"})
  assert compare_studies.main([a, b]) == 0
  (row,) = compare_studies.summary(compare_studies.cells_of(a), compare_studies.cells_of(b))
  assert (row["downstream"], row["decided_a"], row["decided_b"], row["same"]) == (3, 2, 1, 1)
  assert (row["pretraining"], row["pretraining_a"], row["pretraining_b"]) == (1, 1, 1)
  out = capsys.readouterr().out
  assert "Dp* 3,900 [3,500, 4,400]" in out and "same verdict in both 1/3" in out
  assert "m2 (M = 1,000), downstream, Df = 100" in out   # the report's own cell names


def test_a_workdir_without_fits_is_one_line(tmp_path, capsys):
  a = _write(tmp_path, "a", {("m1", 0): "helps_where_decided"})
  assert compare_studies.main([a, str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "fits.json does not exist" in err
