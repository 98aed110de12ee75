"""fits.json as written matches the schema documented in docs/laws.md (and the docs parse)."""

import json
import pathlib
import re

import numpy as np

from jaxscale import cli
from jaxscale import laws
from jaxscale.laws import api

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "laws.md"


def documented_schema() -> dict:
  text = DOC.read_text()
  section = text[text.index("## fits.json (schema version 2)"):]
  block = re.search(r"```json\n(.*?)```", section, re.S).group(1)
  return json.loads(block)


def _matches(value, spec: str, blocks: dict) -> bool:
  for alt in (a.strip() for a in spec.split("|")):
    if alt == "any":
      return True
    if alt == "null" and value is None:
      return True
    if alt == "int" and isinstance(value, int) and not isinstance(value, bool):
      return True
    if alt == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
      return True
    if alt == "str" and isinstance(value, str):
      return True
    if alt == "bool" and isinstance(value, bool):
      return True
    if alt.startswith("[") and isinstance(value, list):
      if all(_matches(v, alt[1:-1], blocks) for v in value):
        return True
    if alt in blocks and isinstance(value, dict):
      check(value, blocks[alt], blocks, alt)
      return True
  return False


def check(value, spec, blocks: dict, path: str = "FITS") -> None:
  """Asserts that `value` (parsed JSON) follows `spec` (a block of the documented schema)."""
  if isinstance(spec, dict):
    assert isinstance(value, dict), path
    if "*" in spec:
      for k, v in value.items():
        check(v, spec["*"], blocks, f"{path}.{k}")
      return
    required = {k for k in spec if not k.endswith("?")}
    allowed = {k.rstrip("?") for k in spec}
    assert required <= set(value), (path, sorted(required - set(value)))
    assert set(value) <= allowed, (path, sorted(set(value) - allowed))
    for k, s in spec.items():
      if k.rstrip("?") in value:
        check(value[k.rstrip("?")], s, blocks, f"{path}.{k.rstrip('?')}")
  elif isinstance(spec, list):
    assert isinstance(value, list), path
    for i, v in enumerate(value):
      check(v, spec[0], blocks, f"{path}[{i}]")
  else:
    assert _matches(value, spec, blocks), (path, value, spec)


def test_written_fits_json_follows_the_documented_schema(tmp_path, synth):
  blocks = documented_schema()
  x = synth.transfer_grid(seeds=1)
  rng = np.random.default_rng(0)
  lines = ["dp,params,df,arm,err"]
  for arm, over in ((0, {}), (1, dict(E_inf=0.08, A=2.0))):
    y = synth.noisy("transfer_additive", dict(synth.TRANSFER_TRUTH, **over), x, rng)
    lines += [f"{a:g},{b:g},{c:g},{arm},{e:.8g}" for a, b, c, e in zip(x["Dp"], x["M"], x["Df"], y)]
  data, out = tmp_path / "d.csv", tmp_path / "fits.json"
  data.write_text("\n".join(lines) + "\n")
  rc = cli.main(["fit", str(data), "--law", "transfer_additive", "--inputs", "Dp=dp,M=params,Df=df",
                 "--target", "err", "--split-by", "arm", "--bootstrap", "8", "--boundary", "Dp",
                 "--at", "M=4e5,Df=300", "--holdout", "dp=30000", "--fix", "gamma=0.4",
                 "--bounds", "alpha=0:2", "--starts", "64", "--steps", "60", "--out", str(out)])
  assert rc == 0
  fits = json.loads(out.read_text())
  assert fits["schema_version"] == api.SCHEMA_VERSION == 2
  check(fits, blocks["FITS"], blocks)
  assert fits["groups"]["0"]["holdout"]["rows"]["line"]  # the optional parts were exercised
  assert fits["boundary"]["ends"]["low"]["ci_low"] is not None


def test_schema_checker_rejects_an_undocumented_key():
  blocks = documented_schema()
  bad = {"law": "x"}
  try:
    check(bad, blocks["FITS"], blocks)
  except AssertionError:
    return
  raise AssertionError("a fits.json missing keys passed the check")


def test_every_builtin_law_is_documented():
  text = DOC.read_text()
  for name in laws.names():
    if not name.startswith("test_"):
      assert f"| `{name}` |" in text, name
