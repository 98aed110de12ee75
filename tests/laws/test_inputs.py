"""Input problems of `jaxscale fit`: each is one line naming the file's line, exit 2, before fitting."""

import json

import numpy as np

from jaxscale import cli
from jaxscale import laws
from jaxscale.laws import table as table_lib

HEADER = "Model,Training,size,err"


def _csv(path, extra=(), n=12):
  """Rows of two models x one training value; the power law in size; then `extra` lines."""
  x = np.exp(np.linspace(np.log(10.0), np.log(1e5), n))
  lines = [HEADER]
  for model, a in (("6 Enc, 6 Dec", 2.0), ("Dec-only", 1.0)):
    y = laws.predict("power", dict(E_inf=0.05, A=a, alpha=0.4), {"x": x})
    lines += [f'"{model}",1,{v:.6g},{e:.8g}' for v, e in zip(x, y)]
  path.write_text("\n".join(lines + list(extra)) + "\n")
  return path


def _fit(tmp_path, data, *extra):
  out = tmp_path / "fits.json"
  rc = cli.main(["fit", str(data), "--law", "power", "--inputs", "x=size", "--target", "err",
                 "--starts", "16", "--steps", "50", "--out", str(out), *extra])
  return rc, out


def _one_error(capsys):
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("jaxscale: error: "), err
  return err[0]


def test_where_value_with_a_comma_and_a_comparison(tmp_path):
  data = _csv(tmp_path / "d.csv")
  rc, out = _fit(tmp_path, data, "--where", "Model=6 Enc, 6 Dec", "--where", "Training=1",
                 "--where", "size>=20")
  assert rc == 0
  g = json.loads(out.read_text())["groups"]["all"]
  assert g["n"] == 11  # 12 rows of that model, one below size 20
  assert min(g["rows"]["line"]) == 3 and max(g["rows"]["line"]) == 13


def test_holdout_value_may_hold_a_comma(tmp_path):
  rc, out = _fit(tmp_path, _csv(tmp_path / "d.csv"), "--holdout", "Model=6 Enc, 6 Dec")
  assert rc == 0
  g = json.loads(out.read_text())["groups"]["all"]
  assert g["n"] == 12 and g["holdout"]["n"] == 12 and g["holdout"]["rows"]["line"][0] == 2


def test_two_conditions_in_one_flag_are_refused_with_a_hint(tmp_path, capsys):
  rc, out = _fit(tmp_path, _csv(tmp_path / "d.csv"), "--where", "Model=Dec-only,Training=1")
  line = _one_error(capsys)
  assert rc == 2 and not out.exists()
  assert "no rows left after --where Model=Dec-only,Training=1" in line and "repeat the flag" in line


def test_duplicated_column_is_refused(tmp_path, capsys):
  data = tmp_path / "d.csv"
  data.write_text("size,err,err\n1,0.5,0.4\n2,0.4,0.3\n")
  rc, _ = _fit(tmp_path, data)
  line = _one_error(capsys)
  assert rc == 2 and "line 1 names column 'err' twice" in line


def test_one_row_group_is_named_before_any_fit(tmp_path, capsys):
  data = _csv(tmp_path / "d.csv", extra=['"Lone",1,100,0.3'])
  rc, out = _fit(tmp_path, data, "--split-by", "Model")
  line = _one_error(capsys)
  assert rc == 2 and not out.exists()
  assert "only 1 point was given (line 26)" in line and "in group Model=Lone" in line


def test_text_cell_names_its_line(tmp_path, capsys):
  data = _csv(tmp_path / "d.csv", extra=['"Dec-only",1,oops,0.3'])
  rc, _ = _fit(tmp_path, data)
  line = _one_error(capsys)
  assert rc == 2 and "column 'size' must be numeric, found 'oops' on line 26" in line


def test_bad_target_names_the_file_line_after_filtering(tmp_path, capsys):
  data = _csv(tmp_path / "d.csv", extra=['"Dec-only",1,50,0'])
  rc, _ = _fit(tmp_path, data, "--where", "Model=Dec-only")
  line = _one_error(capsys)
  assert rc == 2 and "non-positive value(s) (line 26)" in line


def test_mixed_stages_get_a_hint(tmp_path, capsys):
  rows = [dict(stage=s, dp=float(d), eval_error=0.5 / d ** 0.3) for s in ("pretrain", "finetune")
          for d in (10, 100, 1000, 10000)]
  data = tmp_path / "records.jsonl"
  data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  rc = cli.main(["fit", str(data), "--law", "power", "--inputs", "x=dp", "--target", "eval_error",
                 "--out", str(tmp_path / "f.json")])
  line = _one_error(capsys)
  assert rc == 2 and "--where stage=finetune" in line


def test_where_operators():
  t = {"a": np.array([1, 5, 10]), "b": np.array(["x, y", "z", "x, y"], dtype=object)}
  assert table_lib.where(t, "a>=5").tolist() == [False, True, True]
  assert table_lib.where(t, "a<5").tolist() == [True, False, False]
  assert table_lib.where(t, "b=x, y").tolist() == [True, False, True]
  assert table_lib.where(t, "b!=z").tolist() == [True, False, True]


def test_torn_last_record_is_skipped(tmp_path):
  data = tmp_path / "records.jsonl"
  data.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
  t = laws.read_table(data)
  assert t["a"].tolist() == [1, 2] and t[table_lib.LINE].tolist() == [1, 2]
