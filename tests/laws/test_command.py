"""`jaxscale fit` on a CSV and on records.jsonl: fits.json, the printed table, errors."""

import json

import numpy as np
import pytest

from jaxscale import cli
from jaxscale import laws


def _write_csv(path, n=40, seed=0):
  rng = np.random.default_rng(seed)
  x = np.exp(np.linspace(np.log(10.0), np.log(1e5), n))
  y = laws.predict("power", dict(E_inf=0.05, A=2.0, alpha=0.4), {"x": x})
  y = y * np.exp(0.01 * rng.standard_normal(n))
  lines = ["size,err,arm"] + [f"{a:.6g},{b:.8g},{i % 2}" for i, (a, b) in enumerate(zip(x, y))]
  path.write_text("\n".join(lines) + "\n")


def test_fit_csv_writes_fits_json_and_table(tmp_path, capsys):
  data, out = tmp_path / "m.csv", tmp_path / "fits.json"
  _write_csv(data)
  rc = cli.main(["fit", str(data), "--law", "power", "--inputs", "x=size", "--target", "err",
                 "--bootstrap", "20", "--starts", "64", "--out", str(out)])
  assert rc == 0
  fits = json.loads(out.read_text())
  assert fits["groups"]["all"]["params"]["alpha"]["value"] == pytest.approx(0.4, rel=0.05)
  assert fits["boundary"] is None
  text = capsys.readouterr().out
  assert "alpha" in text and "ci_low" in text and f"wrote {out}" in text


def test_existing_out_needs_force(tmp_path, capsys):
  data, out = tmp_path / "m.csv", tmp_path / "fits.json"
  _write_csv(data)
  out.write_text("{}")
  rc = cli.main(["fit", str(data), "--law", "power", "--inputs", "x=size", "--target", "err",
                 "--out", str(out)])
  assert rc == 2 and out.read_text() == "{}"
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"jaxscale: error: {out} exists; pass --force to overwrite it"]


def test_records_jsonl_with_where_and_split(tmp_path, capsys):
  rows = []
  rng = np.random.default_rng(1)
  for arm, a in ((False, 2.0), (True, 1.0)):
    for x in np.exp(np.linspace(np.log(10.0), np.log(1e5), 40)):
      e = laws.predict("power", dict(E_inf=0.05, A=a, alpha=0.4), {"x": x})
      rows.append(dict(stage="finetune", dp=float(x), distilled=arm,
                       eval_error=float(e * np.exp(0.01 * rng.standard_normal()))))
  rows.append(dict(stage="pretrain", dp=10.0, distilled=False, eval_error=0.0))
  data, out = tmp_path / "records.jsonl", tmp_path / "fits.json"
  data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  rc = cli.main(["fit", str(data), "--law", "power", "--inputs", "x=dp", "--target", "eval_error",
                 "--where", "stage=finetune", "--split-by", "distilled", "--boundary", "x",
                 "--starts", "64", "--out", str(out)])
  assert rc == 0
  fits = json.loads(out.read_text())
  assert set(fits["groups"]) == {"false", "true"}
  assert fits["boundary"]["roots"] == [] and fits["boundary"]["sign_below"] == 1
  assert fits["boundary"]["verdict"] == "fitted_no_crossing"
  text = capsys.readouterr().out
  assert "do not cross in range" in text and "not a verdict" in text


def test_user_errors_are_one_line(tmp_path, capsys):
  data = tmp_path / "m.csv"
  _write_csv(data)
  rc = cli.main(["fit", str(data), "--law", "power", "--inputs", "x=nosuch", "--target", "err",
                 "--out", str(tmp_path / "f.json")])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and "no column 'nosuch'" in err[0]
  rc = cli.main(["fit", str(data), "--law", "power", "--inputs", "x", "--target", "err",
                 "--out", str(tmp_path / "f.json")])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and "NAME=VALUE" in err[0]
