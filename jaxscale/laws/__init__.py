"""Scaling-law fitting: law forms, multi-start fits, bootstrap CIs, backtests, the boundary.

High-level API (what the study runner and the report call):

* `read_table(path) -> dict[str, np.ndarray]`: records.jsonl or CSV as named columns.
* `analyze(table, *, law, inputs, target, split_by=None, bootstrap=0, boundary=None, at=None,
  holdout=None, seed=0, ...) -> dict`: the fits.json content.
* `predict(law, params, inputs) -> np.ndarray`: a fitted curve from fits.json parameters.
* `write_fits(path, content, force=False)`: atomic write that never overwrites without force.
* `fit.fit(form, x, y, ...)`: one multi-start fit (low level).
* `validate.backtest(...)`: largest-scale holdouts and leave-one-scale-out.
"""

from jaxscale.laws.api import analyze, write_fits
from jaxscale.laws import validate  # noqa: F401  (jaxscale.laws.validate.backtest)
from jaxscale.laws.forms import LawForm, Param, get, names, predict, register
from jaxscale.laws.table import read_table

__all__ = ["analyze", "write_fits", "LawForm", "Param", "get", "names",
           "predict", "register", "read_table"]
