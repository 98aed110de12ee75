"""Progress display: plain periodic lines off a terminal, in-place redraws on one."""

import io

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
