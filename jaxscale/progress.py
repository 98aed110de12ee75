"""Logging and progress conventions shared by every long loop.

`Progress` shows step, rate, ETA and the latest metrics. On a terminal it redraws one line in
place; elsewhere (CI, a log file) it prints a plain line at most every `interval_s` seconds and
once at the end, so logs stay short and readable.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO

logger = logging.getLogger("jaxscale")


class _StderrHandler(logging.StreamHandler):
  """A stream handler that writes to whatever `sys.stderr` is when a line is logged.

  A handler bound to the stderr of its first call keeps writing to it after it was replaced (a
  redirected or captured stderr that has since been closed), which loses the line.
  """

  def __init__(self):
    super().__init__(sys.stderr)

  @property
  def stream(self) -> IO[str]:
    return sys.stderr

  @stream.setter
  def stream(self, value: IO[str]) -> None:   # StreamHandler.__init__ assigns it; the property wins
    del value


def setup_logging(verbose: bool = False) -> None:
  """Sends jaxscale's log lines to stderr as ``[jaxscale] message``; quiets absl unless verbose."""
  logging.getLogger("absl").setLevel(logging.DEBUG if verbose else logging.ERROR)
  if logger.handlers:
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    return
  handler = _StderrHandler()
  handler.setFormatter(logging.Formatter("[jaxscale] %(message)s"))
  logger.addHandler(handler)
  logger.setLevel(logging.DEBUG if verbose else logging.INFO)
  logger.propagate = False


def format_duration(seconds: float) -> str:
  """Formats seconds as ``1h02m``, ``3m05s`` or ``12s``."""
  if seconds != seconds or seconds == float("inf"):
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  if h:
    return f"{h}h{m:02d}m"
  if m:
    return f"{m}m{s:02d}s"
  return f"{s}s"


def format_flops(flops: float) -> str:
  """Formats a FLOP count with the unit that shows it: ``950 FLOPs``, ``18.1 GFLOPs``, ``3.66 TFLOPs``."""
  for unit, scale in (("PFLOPs", 1e15), ("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6)):
    if abs(flops) >= scale:
      return f"{flops / scale:.3g} {unit}"
  return f"{flops:.3g} FLOPs"


# The end-of-run summary a console shows: lines of at most this many characters, at most this many lines.
HEADLINE_WIDTH = 100
HEADLINE_LINES = 12


def _drop_long_asides(text: str, longest: int = 24) -> str:
  """`text` without its parenthesised asides longer than `longest` characters (nested ones included)."""
  out, stack = [], []
  for ch in text:
    if ch == "(":
      stack.append(len(out))
    out.append(ch)
    if ch == ")" and stack:
      start = stack.pop()
      if len(out) - start > longest + 2:
        del out[start:]
        while out and out[-1] == " ":
          out.pop()
  return "".join(out)


def headline(lines: list[str], width: int | None = None, max_lines: int = HEADLINE_LINES,
             more: str = "the report") -> list[str]:
  """`lines` fitted to a console: each wrapped to `width` (the terminal's, at most
  HEADLINE_WIDTH), long parenthesised asides dropped, and, when the whole runs past `max_lines`,
  only the last lines kept (a summary's last lines say the most) after one saying how many lines
  of `more` were left out."""
  import shutil
  import textwrap
  width = min(width or shutil.get_terminal_size((HEADLINE_WIDTH, 24)).columns, HEADLINE_WIDTH)
  blocks = [textwrap.wrap(_drop_long_asides(line) if len(line) > width else line, width,
                          subsequent_indent="  ", break_on_hyphens=False) or [""] for line in lines]
  if sum(map(len, blocks)) <= max_lines:
    return [w for block in blocks for w in block]
  kept: list[list[str]] = []
  while blocks and sum(map(len, kept)) + len(blocks[-1]) <= max_lines - 1:
    kept.insert(0, blocks.pop())
  note = f"({len(blocks)} more line(s) in {more})"
  return [note[:width]] + [w for block in kept for w in block]


class Progress:
  """Progress over `total` units (steps, cells, ...).

  Usage::

    with Progress(total=1000, desc="pretrain", unit="step") as bar:
      for step in range(1000):
        ...
        bar.update(1, loss=0.3, **{"img/s": 512})

  Units of unequal cost (a study's cells: a pretraining run costs 20x a fine-tune) take
  ``work_total`` (e.g. FLOPs) and ``update(n, work=w)``: the ETA is then the work left over the work
  done per second, not the units left over the units per second.
  """

  def __init__(self, total: int, desc: str = "", unit: str = "step", *,
               stream: IO[str] | None = None, interval_s: float = 10.0,
               initial: int = 0, enabled: bool = True, delay_s: float = 0.0,
               work_total: float | None = None, work_initial: float = 0.0):
    self.total = max(int(total), 0)
    self.desc = desc
    self.unit = unit
    self.stream = stream if stream is not None else sys.stderr
    self.interval_s = interval_s
    self.count = int(initial)
    self.enabled = enabled
    self.delay_s = delay_s  # stay silent for short loops: nothing is shown before this many seconds
    self.metrics: dict[str, float] = {}
    self._start_count = self.count
    self.work_total = work_total
    self.work = float(work_initial)
    self._start_work = self.work
    self._t0 = time.monotonic()
    self._last_print = -float("inf")
    self._printed_count = -1
    self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
    self._closed = False

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  @property
  def rate(self) -> float:
    """Units per second since this display started."""
    elapsed = time.monotonic() - self._t0
    done = self.count - self._start_count
    return done / elapsed if elapsed > 0 and done > 0 else 0.0

  @property
  def eta_s(self) -> float:
    if self.work_total is not None:
      elapsed, done = time.monotonic() - self._t0, self.work - self._start_work
      return (self.work_total - self.work) * elapsed / done if elapsed > 0 and done > 0 else float("nan")
    rate = self.rate
    return (self.total - self.count) / rate if rate > 0 else float("nan")

  def line(self) -> str:
    """The current status line, e.g. ``pretrain  120/1000 step  35.1 step/s  ETA 25s  loss=0.31``."""
    width = len(str(self.total))
    parts = [f"{self.desc}" if self.desc else "",
             f"{self.count:>{width}}/{self.total} {self.unit}",
             f"{self.rate:.3g} {self.unit}/s",
             f"ETA {format_duration(self.eta_s)}" if self.count < self.total
             else f"took {format_duration(time.monotonic() - self._t0)}"]
    parts += [f"{k}={_fmt(v)}" for k, v in self.metrics.items()]
    return "  ".join(p for p in parts if p)

  def update(self, n: int = 1, work: float = 0.0, **metrics: float) -> None:
    """Advances by `n` units (`work` of the work, where the bar has a ``work_total``) and records the
    latest metrics."""
    self.count += n
    self.work += work
    self.metrics.update(metrics)
    if not self.enabled:
      return
    now = time.monotonic()
    if now - self._t0 < self.delay_s:
      return
    if self._tty:
      if now - self._last_print >= 0.1 or self.count >= self.total:
        self.stream.write("\r\033[K" + self.line())
        self.stream.flush()
        self._last_print = now
        self._printed_count = self.count
    elif now - self._last_print >= self.interval_s:
      self.stream.write(self.line() + "\n")
      self.stream.flush()
      self._last_print = now
      self._printed_count = self.count

  def close(self) -> None:
    """Prints the final line once."""
    if self._closed or not self.enabled:
      self._closed = True
      return
    self._closed = True
    if self._printed_count < 0 and time.monotonic() - self._t0 < self.delay_s:
      self.stream.flush()
      return
    if self._tty:
      self.stream.write("\r\033[K" + self.line() + "\n")
    elif self._printed_count != self.count:  # the last plain line already shows the end
      self.stream.write(self.line() + "\n")
    self.stream.flush()


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)
