"""Reading records.jsonl and CSV into columns; group keys; row matching."""

import json

import numpy as np
import pytest

from jaxscale import laws
from jaxscale.errors import JaxscaleError
from jaxscale.laws import table


def test_jsonl_types_and_missing(tmp_path):
  p = tmp_path / "records.jsonl"
  rows = [dict(stage="finetune", dp=1000, distilled=True, eval_error=0.1),
          dict(stage="finetune", dp=3000, distilled=False, eval_error=0.05, extra="x"),
          dict(stage="pretrain", dp=3000, distilled=False, eval_error=None)]
  p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
  t = laws.read_table(p)
  assert t["dp"].dtype == np.int64 and t["distilled"].dtype == bool
  assert t["eval_error"].dtype == np.float64 and np.isnan(t["eval_error"][2])
  assert t["extra"].tolist() == [None, "x", None]
  assert [k for k, _ in table.groups(t, "distilled")] == ["false", "true"]


def test_csv_types(tmp_path):
  p = tmp_path / "m.csv"
  p.write_text("size,tokens,loss,flag,name\n1e6,100,0.5,true,a\n2e6,200,,FALSE,b\n")
  t = laws.read_table(p)
  assert t["size"].dtype == np.float64 and t["tokens"].dtype == np.int64
  assert np.isnan(t["loss"][1]) and t["flag"].tolist() == [True, False]
  assert t["name"].tolist() == ["a", "b"]


def test_group_keys():
  assert table.key(True) == "true" and table.key(np.bool_(False)) == "false"
  assert table.key(1) == "1" and table.key(1.0) == "1" and table.key(0.5) == "0.5"
  assert table.key("plain") == "plain"


def test_matches_compares_as_keys():
  t = {"dp": np.array([1e5, 3e4, 1e5]), "distilled": np.array([True, False, True])}
  np.testing.assert_array_equal(table.matches(t, "dp", "100000"), [True, False, True])
  np.testing.assert_array_equal(table.matches(t, "dp", "1e5"), [True, False, True])
  np.testing.assert_array_equal(table.matches(t, "distilled", "false"), [False, True, False])


def test_errors(tmp_path):
  with pytest.raises(JaxscaleError, match="no such file"):
    laws.read_table(tmp_path / "nope.csv")
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"a": 1}\n{oops\n')
  with pytest.raises(JaxscaleError, match="line 2 is not valid JSON"):
    laws.read_table(bad)
  with pytest.raises(JaxscaleError, match="no column 'x' in the data; columns are: a"):
    table.column({"a": np.zeros(1)}, "x")
  with pytest.raises(JaxscaleError, match="must be numeric"):
    table.numeric({"a": np.array(["u", "v"], dtype=object)}, "a")
