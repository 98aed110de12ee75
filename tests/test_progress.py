"""Progress display: plain periodic lines off a terminal, in-place redraws on one."""

import io
import sys

import pytest

from jaxscale import progress
from jaxscale.progress import Progress, format_duration


class FakeTTY(io.StringIO):
  def isatty(self):
    return True


def test_plain_stream_prints_periodic_lines_and_final():
  stream = io.StringIO()
  with Progress(total=5, desc="pretrain", unit="step", stream=stream, interval_s=3600) as bar:
    for _ in range(5):
      bar.update(1, loss=0.5)
  lines = stream.getvalue().splitlines()
  assert len(lines) == 2  # the first update, then the final line
  assert "pretrain" in lines[-1] and "5/5 step" in lines[-1] and "loss=0.5" in lines[-1]
  assert "\r" not in stream.getvalue()


def test_tty_redraws_in_place():
  stream = FakeTTY()
  bar = Progress(total=3, desc="x", stream=stream)
  for _ in range(3):
    bar.update(1)
  bar.close()
  assert "\r\033[K" in stream.getvalue()
  assert stream.getvalue().endswith("\n")


def test_eta_and_rate():
  bar = Progress(total=10, stream=io.StringIO(), enabled=False)
  assert bar.rate == 0.0
  bar.update(4)
  assert bar.rate > 0 and bar.eta_s >= 0
  assert "4/10" in bar.line() and "ETA" in bar.line()


def test_eta_weighs_units_by_their_work(monkeypatch):
  """A study's cells differ 20x in cost: the ETA is the work left over the work done per second."""
  clock = [100.0]
  monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
  bar = Progress(total=11, stream=io.StringIO(), enabled=False, work_total=30.0)
  bar.update(10, work=10.0)     # ten cheap units in 10 s: a third of the work
  clock[0] += 10.0
  assert bar.eta_s == pytest.approx(20.0)   # counted in units it would say 1 s
  unweighted = Progress(total=11, stream=io.StringIO(), enabled=False)
  unweighted.update(10)
  clock[0] += 10.0
  assert unweighted.eta_s == pytest.approx(1.0)
  resumed = Progress(total=11, stream=io.StringIO(), enabled=False, initial=10, work_total=30.0,
                     work_initial=10.0)
  assert resumed.eta_s != resumed.eta_s     # nothing done since the start: no rate yet (NaN)
  clock[0] += 5.0
  resumed.update(1, work=10.0)
  assert resumed.eta_s == pytest.approx(5.0)


def test_format_duration():
  assert format_duration(5) == "5s"
  assert format_duration(65) == "1m05s"
  assert format_duration(3720) == "1h02m"
  assert format_duration(float("nan")) == "?"


def test_final_line_not_repeated_when_last_update_printed_it():
  stream = io.StringIO()
  with Progress(total=2, stream=stream, interval_s=0) as bar:
    bar.update(1)
    bar.update(1)
  lines = stream.getvalue().splitlines()
  assert len(lines) == 2 and "2/2" in lines[-1] and "1/2" in lines[0]


def test_delay_keeps_short_loops_silent():
  stream = io.StringIO()
  with Progress(total=3, stream=stream, interval_s=0, delay_s=60) as bar:
    for _ in range(3):
      bar.update(1)
  assert stream.getvalue() == ""


# ----------------------------------------------------------------------------- the study's console

def test_format_flops_picks_a_unit_that_shows_the_number():
  from jaxscale.progress import format_flops
  assert format_flops(3.66e12) == "3.66 TFLOPs"
  assert format_flops(1.81e10) == "18.1 GFLOPs"
  assert format_flops(2.5e15) == "2.5 PFLOPs"
  assert format_flops(0) == "0 FLOPs"


def test_headline_fits_a_console():
  from jaxscale.progress import headline
  law = ("The joint law transfer_additive. Its checks (R² (log) of the cell means ≥ 0.9, converged in a basin "
         "reached by more than one start, exponents in [0.01, 2]): plain arm: fails its checks (R² (log) of "
         "the cell means -0.63 < 0.9; exponent alpha = 2.86 outside [0.01, 2]); distilled arm: passes. " * 3)
  cells = [f"vit_tiny_s (M = 27,882), downstream, Df = {df}: cannot tell: fewer than 3 paired seeds."
           for df in range(20)]
  out = headline(cells + ["Over all 20 downstream cells: 20 cannot tell.", law, "report: r/report.html"],
                 width=100)
  assert len(out) <= 12 and all(len(line) <= 100 for line in out)
  assert out[-1] == "report: r/report.html" and "more line(s) in the report" in out[0]
  assert any("plain arm: fails its checks" in line for line in out)   # the words stay, the asides go
  assert not any("exponent alpha" in line for line in out)
  short = ["a verdict", "report: x"]
  assert headline(short, width=100) == short
  assert max(map(len, headline([law], width=60, max_lines=40))) <= 60


def test_tfds_bars_off_a_terminal_and_its_prints_swallowed(capsys):
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core.utils import tqdm_utils

  from jaxscale.data import builders
  with builders._quiet_tfds():   # pytest's stderr is not a terminal
    print("Downloading and preparing dataset ...")
    bar = tfds.core.utils.tqdm(total=3)
    assert isinstance(bar, tqdm_utils.EmptyTqdm)
  assert capsys.readouterr().out == ""
  assert not isinstance(tfds.core.utils.tqdm(total=1, disable=True), tqdm_utils.EmptyTqdm)  # restored


def _smoke():
  from jaxscale import config as config_lib
  return config_lib.load("configs/smoke.py")


def test_plan_summary_counts_cells_per_stage_and_model(tmp_path):
  from jaxscale.study import console, grid
  config = _smoke()
  p = console.study_plan(config, str(tmp_path))
  lines = console.summary_lines(p)
  assert len(lines) <= 12   # one screen, whatever the grid's size
  cells = grid.expand(config)
  assert f"plan: {len(cells)} cells" in lines[0] and f"in {len(grid.groups(config))} group(s)" in lines[0]
  for model in config.study.models:
    row = next(line for line in lines if line.split()[:2] == ["fine-tune", model])
    n = sum(c.model == model and c.kind == grid.FINETUNE for c in cells)
    assert row.split()[2:4] == [str(n), str(n)]
  assert lines[-1].split()[:3] == ["total", str(len(cells)), str(len(cells))]
  assert len(console.cell_lines(p)) == len(cells) + 1   # --verbose / --dry-run: one line per cell


def test_eta_from_records_and_without_a_measurement(tmp_path):
  from jaxscale.study import console
  config = _smoke()
  p = console.study_plan(config, str(tmp_path))
  p.update(rate_measured=True, flops_per_s=p["todo_flops"] / 125.0)   # as if records gave the speed
  line = console.eta_line(p, config)
  assert line.startswith("ETA: training about 2m05s") and "records" in line
  p.update(rate_measured=False)
  assert "not estimated here" in console.eta_line(p, config, measure=False)
  p.update(todo_flops=0.0)
  assert "nothing left to train" in console.eta_line(p, config)


def test_measured_rate_times_a_train_program_of_the_study():
  from jaxscale.study import plan
  config = _smoke()
  config.study.models = ("vit_tiny_xs",)
  rate = plan.measure_rate(config)
  assert rate.flops_per_s > 1e6 and rate.compile_s > 0
  assert "vit_tiny_xs" in rate.what and "device" in rate.what


def test_eval_flops_count_every_run_on_its_whole_eval_split(monkeypatch):
  import numpy as np

  from jaxscale import models
  from jaxscale.data import sources
  from jaxscale.study import console, grid
  config = _smoke()
  monkeypatch.setattr(sources, "load_labels", lambda name, split, data_dir="": np.zeros(100, np.int64))
  cells = grid.expand(config)
  want = sum(100 * models.flops_per_image(c.model, sources.num_classes(config[c.stage].dataset), 16)
             for c in cells)
  assert console.eval_flops(config, cells) == want > 0


def test_fit_progress_labels_are_words(monkeypatch):
  import numpy as np
  import pytest

  from jaxscale.laws import api
  seen = []

  class Stop(Exception):
    pass

  def fake_fit(*args, desc="", **kw):
    seen.append(desc)
    raise Stop
  monkeypatch.setattr(api.fit_lib, "fit", fake_fit)
  x = np.exp(np.linspace(0, 5, 12))
  table = {"size": x, "err": 1 / x, "distilled": np.array([False, True] * 6)}
  with pytest.raises(Stop):
    api.analyze(table, law="power", inputs={"x": "size"}, target="err", split_by="distilled",
                group_labels={"false": "the plain arm"}, progress=False)
  assert seen == ["fitting the plain arm"]
  assert api.group_name("true", "distilled") == "the rows with distilled = true"
  assert api.group_name("all", None) == "the law"


def test_log_lines_follow_a_replaced_stderr(monkeypatch):
  """A stderr captured by one command and closed must not swallow the next command's lines."""
  import io
  monkeypatch.setattr(progress.logger, "handlers", [])
  first = io.StringIO()
  monkeypatch.setattr(sys, "stderr", first)
  progress.setup_logging()
  progress.logger.info("one")
  first.close()
  second = io.StringIO()
  monkeypatch.setattr(sys, "stderr", second)
  progress.setup_logging()
  progress.logger.info("two")
  assert second.getvalue() == "[jaxscale] two\n"


def test_the_timed_program_trains_every_step_it_is_timed_on():
  # the engine skips a run's dispatch when none of its steps is its own (valid all False), so the
  # ETA's timing call must mark every step valid, or it times an empty call (an absurd rate)
  import jax
  import numpy as np

  from jaxscale.study import plan
  seen = []

  class Chunk:
    def lower(self, *args):
      return self

    def compile(self):
      return lambda state, *rest: (seen.append(rest[-1]) or state,)

  valid = jax.ShapeDtypeStruct((4, 3), np.bool_)
  args = (jax.ShapeDtypeStruct((2,), np.float32), {}, None, {}, jax.ShapeDtypeStruct((4, 3), np.float32), valid)
  plan.time_program(Chunk(), args, min_s=0.0)
  assert seen and all(np.asarray(v).shape == (4, 3) and np.asarray(v).all() for v in seen)
