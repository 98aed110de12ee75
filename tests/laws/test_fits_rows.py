"""fits.json keeps per-row values inline up to a row count; larger groups go to a side .npz."""

import json

import numpy as np
import pytest

from jaxscale import cli
from jaxscale import laws
from jaxscale.errors import JaxscaleError
from jaxscale.laws import api

X = np.exp(np.linspace(np.log(10.0), np.log(1e5), 60))


@pytest.fixture(scope="module")
def analysis():
  y = laws.predict("power", dict(E_inf=0.05, A=2.0, alpha=0.4), {"x": X})
  y = y * np.exp(0.01 * np.random.default_rng(0).standard_normal(len(X)))
  table = {"size": X, "err": y, "half": (X > 1000).astype(float)}
  return api.analyze(table, law="power", inputs={"x": "size"}, target="err", holdout=("half", 1.0),
                     max_starts=16, progress=False)


def test_large_groups_go_to_the_side_file_and_read_back_equal(analysis, tmp_path):
  inline, split = tmp_path / "inline.json", tmp_path / "fits.json"
  api.write_fits(str(inline), analysis.content)
  api.write_fits(str(split), analysis.content, max_rows=10)
  small, big = json.loads(inline.read_text()), json.loads(split.read_text())
  n_fit = small["groups"]["all"]["n"]
  assert len(small["groups"]["all"]["rows"]["line"]) == n_fit and not api.rows_path(str(inline)).endswith(".json")
  assert not (tmp_path / "inline.rows.npz").exists()
  assert big["groups"]["all"]["rows"] == {"n": n_fit, "file": "fits.rows.npz", "key": "all/rows"}
  assert (tmp_path / "fits.rows.npz").exists() and split.stat().st_size < inline.stat().st_size / 2
  for holdout in (False, True):
    a = api.read_rows(small, str(inline), "all", holdout=holdout)
    b = api.read_rows(big, str(split), "all", holdout=holdout)
    assert a.keys() == b.keys() == {"line", "fitted", "log_residual"} and len(a["line"]) > 10
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  api.write_fits(str(split), analysis.content, force=True)   # small enough now: the stale side file goes
  assert not (tmp_path / "fits.rows.npz").exists()
  assert len(api.read_rows(json.loads(split.read_text()), str(split), "all")["line"]) == n_fit


def test_a_missing_side_file_is_one_line(analysis, tmp_path):
  path = tmp_path / "fits.json"
  api.write_fits(str(path), analysis.content, max_rows=0)
  (tmp_path / "fits.rows.npz").unlink()
  with pytest.raises(JaxscaleError, match="fits.rows.npz, which is missing"):
    api.read_rows(json.loads(path.read_text()), str(path), "all")


def test_fit_flag_and_predict_from_a_split_file(tmp_path):
  y = laws.predict("power", dict(E_inf=0.05, A=2.0, alpha=0.4), {"x": X})
  data, out, new, preds = tmp_path / "d.csv", tmp_path / "f.json", tmp_path / "n.csv", tmp_path / "p.csv"
  data.write_text("size,err\n" + "".join(f"{a:.8g},{b:.8g}\n" for a, b in zip(X, y)))
  assert cli.main(["fit", str(data), "--law", "power", "--inputs", "x=size", "--target", "err",
                   "--starts", "16", "--max-json-rows", "5", "--out", str(out)]) == 0
  assert json.loads(out.read_text())["groups"]["all"]["rows"]["file"] == "f.rows.npz"
  new.write_text("size\n100\n")
  assert cli.main(["predict", str(out), str(new), "--out", str(preds)]) == 0
  assert len(preds.read_text().splitlines()) == 2
