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


def _records(path, twice=False, conflict=False):
  """A records.jsonl of 40 fine-tune runs with cell ids; `twice`: every line written twice."""
  x = np.exp(np.linspace(np.log(10.0), np.log(1e5), 40))
  y = laws.predict("power", dict(E_inf=0.05, A=2.0, alpha=0.4), {"x": x})
  lines = [json.dumps(dict(stage="finetune", cell_id=f"ft-{i}", dp=float(a), eval_error=float(b), wall_s=1.0))
           for i, (a, b) in enumerate(zip(x, y))]
  if twice:
    lines += [line.replace('"wall_s": 1.0', '"wall_s": 2.0') for line in lines]
  if conflict:
    lines.append(lines[3].replace(f'"eval_error": {float(y[3])!r}', '"eval_error": 0.9'))
  path.write_text("\n".join(lines) + "\n")


def test_fit_counts_a_run_written_twice_once(tmp_path, capsys):
  once, twice = tmp_path / "once.jsonl", tmp_path / "twice.jsonl"
  _records(once)
  _records(twice, twice=True)
  ns = []
  for data in (once, twice):
    out = tmp_path / f"{data.stem}.json"
    assert cli.main(["fit", str(data), "--law", "power", "--inputs", "x=dp", "--target", "eval_error",
                     "--starts", "16", "--out", str(out)]) == 0
    ns.append(json.loads(out.read_text())["groups"]["all"]["n"])
  assert ns == [40, 40]


def test_fit_refuses_two_results_of_one_run(tmp_path, capsys):
  data = tmp_path / "records.jsonl"
  _records(data, conflict=True)
  assert cli.main(["fit", str(data), "--law", "power", "--inputs", "x=dp", "--target", "eval_error",
                   "--out", str(tmp_path / "f.json")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "lines 4 and 41 hold different results for finetune cell ft-3" in err
  assert not (tmp_path / "f.json").exists()


FIT = ["--law", "power", "--inputs", "x=size", "--target", "err"]


def _one_line(capsys, argv):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("jaxscale: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
  return err


@pytest.mark.parametrize("flags, needle", [
    (["--delta", "0"], "--delta must be a finite number > 0"),
    (["--delta", "inf"], "--delta must be a finite number > 0"),
    (["--split-by", "arm", "--boundary", "x", "--boundary-range", "4000:250"],
     "--boundary-range LO:HI must satisfy 0 < lo < hi < inf, got [4000, 250]"),
    (["--split-by", "arm", "--boundary", "x", "--boundary-range", "0:250"], "must satisfy 0 < lo"),
])
def test_bad_ranges_are_refused_before_any_fit(tmp_path, capsys, monkeypatch, flags, needle):
  data = tmp_path / "m.csv"
  _write_csv(data)
  monkeypatch.setattr(laws.api, "analyze", lambda *a, **k: pytest.fail("fitted before refusing"))
  err = _one_line(capsys, ["fit", str(data), *FIT, *flags, "--out", str(tmp_path / "f.json")])
  assert needle in err


@pytest.mark.parametrize("encoding, needle", [("utf-16", "is UTF-16 text"), ("latin-1", "is not UTF-8 text")])
def test_a_csv_not_in_utf8_is_one_line(tmp_path, capsys, encoding, needle):
  data = tmp_path / "m.csv"
  data.write_text("size,err,note\n10,0.5,caf\u00e9\n100,0.3,na\u00efve\n", encoding=encoding)
  err = _one_line(capsys, ["fit", str(data), *FIT, "--out", str(tmp_path / "f.json")])
  assert needle in err and "save it as UTF-8" in err


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path, capsys):
  plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
  _write_csv(plain)
  bom.write_text(plain.read_text(), encoding="utf-8-sig")
  assert bom.read_bytes()[:3] == b"\xef\xbb\xbf"
  out = tmp_path / "f.json"
  assert cli.main(["fit", str(bom), *FIT, "--starts", "16", "--out", str(out)]) == 0
  assert json.loads(out.read_text())["groups"]["all"]["n"] == 40


def test_an_out_that_cannot_be_written_is_refused_before_any_fit(tmp_path, capsys, monkeypatch):
  data = tmp_path / "m.csv"
  _write_csv(data)
  monkeypatch.setattr(laws.api, "analyze", lambda *a, **k: pytest.fail("fitted before refusing"))
  folder = tmp_path / "fits_dir"
  folder.mkdir()
  err = _one_line(capsys, ["fit", str(data), *FIT, "--out", str(folder), "--force"])
  assert f"--out {folder} is a folder" in err and folder.is_dir()
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  err = _one_line(capsys, ["fit", str(data), *FIT, "--out", str(blocker / "fits.json")])
  assert f"cannot write --out {blocker / 'fits.json'}: {blocker} is a file, not a folder" in err
  import errno
  import tempfile

  def read_only(*a, **k):  # what a read-only file system answers (root ignores permission bits)
    raise OSError(errno.EROFS, "Read-only file system", k.get("dir"))
  monkeypatch.setattr(tempfile, "mkstemp", read_only)
  err = _one_line(capsys, ["fit", str(data), *FIT, "--out", str(tmp_path / "ro" / "fits.json")])
  assert "Read-only file system (EROFS)" in err


def test_a_nan_target_is_not_told_to_use_floor(tmp_path, capsys):
  data = tmp_path / "m.csv"
  _write_csv(data)
  text = data.read_text().splitlines()
  text[3] = text[3].split(",")[0] + ",nan," + text[3].split(",")[2]
  data.write_text("\n".join(text) + "\n")
  err = _one_line(capsys, ["fit", str(data), *FIT, "--out", str(tmp_path / "f.json")])
  assert "NaN" in err and "line 4" in err and "--floor" not in err
