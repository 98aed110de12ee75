"""Do two runs of one study design read the same? Cell verdicts side by side, from their fits.json.

The default study's done-when asks that a second seed set (`--config.study.seeds=...`, the teacher
fixed by `study.teacher_seed`) give the same verdict in at least 10 of the 12 downstream (model, Df)
cells, and that a run on another device count give the same headline. This prints, per comparison
(distilled vs plain, distilled vs smoothed) and cell (model, the pretraining task or a Df), each
run's cell verdict with its decided Dp range and crossing, then per comparison: cells decided in
each run (downstream and pretraining task) and cells with the same verdict in both.

  python benchmarks/compare_studies.py runs/default runs/default-seeds10
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jaxscale.errors import JaxscaleError
from jaxscale.study import verdicts

NOT_DECIDED = ("cannot_tell", "cannot_be_judged")   # the cell verdicts (verdicts.VERDICTS) that state nothing


def cells_of(workdir: str) -> dict[tuple[str, str, str, int], dict]:
  """{(comparison, stage, model, Df): the paired cell of fits.json}."""
  path = os.path.join(workdir, "fits.json")
  if not os.path.exists(path):
    raise JaxscaleError(f"{path} does not exist; run `jaxscale study` (or `jaxscale report`) on {workdir} first")
  with open(path) as f:
    paired = json.load(f).get("paired") or []
  return {(c["comparison"], c["stage"], c["model"], c["df"]): c for c in paired}


def describe(c: dict | None) -> str:
  if c is None:
    return "-"
  text = c["verdict"]
  if c.get("decided_dp"):
    text += f" (decided at Dp {', '.join(str(d) for d in c['decided_dp'])})"
  cross = c.get("crossing")
  if cross and cross.get("dp_star"):
    ci = cross.get("ci")
    text += f", Dp* {cross['dp_star']:,.0f}" + (f" [{ci[0]:,.0f}, {ci[1]:,.0f}]" if ci else "")
  return text


def summary(a: dict, b: dict) -> list[dict]:
  """Per comparison: {comparison, downstream, decided_a, decided_b, same, pretraining_a, pretraining_b}."""
  rows = []
  for comparison in sorted({k[0] for k in a} | {k[0] for k in b}):
    keys = sorted({k for k in a if k[0] == comparison} | {k for k in b if k[0] == comparison})
    down = [k for k in keys if k[1] != "pretrain"]
    pre = [k for k in keys if k[1] == "pretrain"]
    decided = lambda run, ks: sum(k in run and run[k]["verdict"] not in NOT_DECIDED for k in ks)
    rows.append({"comparison": comparison, "downstream": len(down), "decided_a": decided(a, down),
                 "decided_b": decided(b, down), "pretraining": len(pre), "pretraining_a": decided(a, pre),
                 "pretraining_b": decided(b, pre),
                 "same": sum(k in a and k in b and a[k]["verdict"] == b[k]["verdict"] for k in down)})
  return rows


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("first", help="a study's workdir")
  ap.add_argument("second", help="another run of the same design (other seeds, devices, ...)")
  args = ap.parse_args(argv)
  try:
    a, b = cells_of(args.first), cells_of(args.second)
  except JaxscaleError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for key in sorted(set(a) | set(b)):
    cell = a.get(key) or b[key]
    print(f"{key[0]}, {verdicts.cell_name(key[1], key[2], cell['params'], key[3])}")
    print(f"  A: {describe(a.get(key))}\n  B: {describe(b.get(key))}")
  print(f"\nA = {args.first}, B = {args.second}")
  for r in summary(a, b):
    print(f"{r['comparison']}: downstream cells decided A {r['decided_a']}/{r['downstream']}, "
          f"B {r['decided_b']}/{r['downstream']}; same verdict in both {r['same']}/{r['downstream']}; "
          f"pretraining task decided A {r['pretraining_a']}/{r['pretraining']}, B {r['pretraining_b']}/{r['pretraining']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
