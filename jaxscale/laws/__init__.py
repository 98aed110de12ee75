"""Scaling-law fitting: law forms, multi-start fits, bootstrap CIs, backtests, the boundary.

Modules, bottom to top (each imports only those above it in this list):
`numeric` (float64 scope, losses) <- `forms` (law forms, registry) <- `table` (reading files)
<- `inputs` (columns of a request) <- `fit` (Levenberg-Marquardt multi-start) <- `uncertainty`
(bootstrap) <- `boundary`, `validate` (backtests) <- `api` (`analyze`) <- `command`,
`predict_command` (the CLI).

High-level API (what the study and the CLI call):

* `read_table(path) -> dict[str, np.ndarray]`: records.jsonl or CSV as named columns.
* `analyze(table, *, law, inputs, target, split_by=None, bootstrap=0, boundary=None, at=None,
  holdout=None, fix=None, bounds=None, loss="huber", ...) -> Analysis`: fits per group, their
  bootstrap, the boundary; `.content` is the fits.json content (schema in docs/laws.md).
* `predict(law, params, inputs) -> np.ndarray`: a fitted curve from fits.json parameters.
* `write_fits(path, content, force=False)`: atomic write that never overwrites without force.
* `fit.fit(form, x, y, ...)`: one multi-start fit (low level).
* `validate.backtest(...)`: largest-scale holdouts and leave-one-scale-out.
"""

from jaxscale.laws import validate  # noqa: F401  (jaxscale.laws.validate.backtest)
from jaxscale.laws import curve_table  # noqa: F401  (registers transfer_additive_seen)
from jaxscale.laws.api import Analysis, GroupFit, analyze, write_fits
from jaxscale.laws.forms import LawForm, Param, get, names, predict, register
from jaxscale.laws.table import read_table

__all__ = ["analyze", "Analysis", "GroupFit", "write_fits", "LawForm", "Param", "get", "names",
           "predict", "register", "read_table"]
