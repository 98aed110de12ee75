"""Which columns a law reads: input names to columns, the target column, the effort/constraint flags.

Shared by `api.analyze` and `validate.backtest` (so neither imports the other).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxscale.errors import JaxscaleError
from jaxscale.laws import table as table_lib
from jaxscale.laws.forms import LawForm


def resolve_inputs(form: LawForm, inputs: Mapping[str, str]) -> dict[str, str]:
  """{canonical input name: column} from a user mapping; every input of the law must be given."""
  out: dict[str, str] = {}
  for name, col in inputs.items():
    canon = form.resolve_input(name)
    if canon in out:
      raise JaxscaleError(f"input {canon} of law '{form.name}' is given twice")
    out[canon] = col
  missing = [n for n in form.inputs if n not in out]
  if missing:
    raise JaxscaleError(f"law '{form.name}' needs inputs {', '.join(form.inputs)}; missing "
                        f"{', '.join(missing)} (pass --inputs {','.join(f'{m}=COLUMN' for m in missing)})")
  return {n: out[n] for n in form.inputs}


def input_or_column(form: LawForm, columns: Mapping[str, str], name: str) -> str:
  """The law input meant by `name`: an input name (any case, aliases) or the column it reads."""
  try:
    return form.resolve_input(name)
  except JaxscaleError:
    hits = [n for n, c in columns.items() if c == name]
    if len(hits) == 1:
      return hits[0]
    raise


def target_values(table: Mapping[str, np.ndarray], target: str,
                  floor: float | None) -> tuple[np.ndarray, int]:
  """Target float64 [N], clipped up to `floor` when given; also how many values were clipped."""
  y = table_lib.numeric(table, target)
  if floor is None:
    return y, 0
  if not floor > 0:
    raise JaxscaleError(f"floor must be positive, got {floor}")
  n = int(np.sum(y < floor))
  return np.where(np.isnan(y), y, np.maximum(y, floor)), n
