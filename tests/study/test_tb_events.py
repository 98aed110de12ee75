"""TensorBoard event files: written per run under tb/<stage>/<model>/<cell>, read back with the writer's
own protobuf definitions; without the writer, one info line and no files."""

import glob
import logging
import struct
import sys
from types import SimpleNamespace

import pytest

from jaxscale.study import tb_events


def _scalars(directory):
  """{tag: [(step, value)]} of the event files of `directory` (TFRecord frames of Event protos)."""
  from tensorboardX.proto import event_pb2
  out = {}
  for path in sorted(glob.glob(f"{directory}/events.out.tfevents.*")):
    data = open(path, "rb").read()
    at = 0
    while at < len(data):
      (n,) = struct.unpack("<Q", data[at:at + 8])
      event = event_pb2.Event.FromString(data[at + 12:at + 12 + n])
      at += 12 + n + 4
      for v in event.summary.value:
        out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


CURVE = [{"examples": 320, "train_loss": 2.5, "eval_error": 0.75, "eval_loss": 2.25},
         {"examples": 640, "train_loss": 1.5, "eval_error": 0.5, "eval_loss": 1.75}]


def test_event_files_read_back(tmp_path):
  pytest.importorskip("tensorboardX")
  results = [{"losses": [3.0, 2.0, 1.0], "curve": CURVE}, {"losses": [4.0], "curve": CURVE[1:]}]
  cells = [SimpleNamespace(id="pt-a"), SimpleNamespace(id="pt-b")]
  for _ in range(2):   # a group finished again (resume) replaces its runs' files
    tb_events.write_group(str(tmp_path), "pretrain", "vit_tiny_xs", cells, results, batch=32)
  a = _scalars(tb_events.run_dir(str(tmp_path), "pretrain", "vit_tiny_xs", "pt-a"))
  assert a["train/loss"] == [(32, 3.0), (64, 2.0), (96, 1.0)]
  assert a["curve/eval_error"] == [(320, 0.75), (640, 0.5)]
  assert a["curve/eval_loss"] == [(320, 2.25), (640, 1.75)] and a["curve/train_loss"] == [(320, 2.5), (640, 1.5)]
  b = _scalars(str(tmp_path / "tb" / "pretrain" / "vit_tiny_xs" / "pt-b"))
  assert b["curve/eval_error"] == [(640, 0.5)] and b["train/loss"] == [(32, 4.0)]


def test_without_the_writer_one_info_line_and_no_files(tmp_path, monkeypatch, caplog):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)   # import fails
  monkeypatch.setattr(tb_events, "_SAID", [])
  cells = [SimpleNamespace(id="a"), SimpleNamespace(id="b")]
  with caplog.at_level(logging.INFO, logger="jaxscale"):
    for _ in range(2):
      tb_events.write_group(str(tmp_path), "finetune", "m", cells, [{"losses": [1.0], "curve": CURVE}] * 2, 8)
  assert [r.getMessage() for r in caplog.records if "tensorboardX" in r.getMessage()] == [
      "tensorboardX is not installed: no TensorBoard event files (pip install 'jaxscale[tb]')"]
  assert not (tmp_path / "tb").exists()


def test_long_runs_write_window_means_of_their_losses():
  """At most MAX_LOSS_POINTS loss points: 3,200 steps are written as 800 means of 4 steps, at the
  examples seen after each window's last step; a run of 1,000 steps keeps every step."""
  losses = [float(i % 7) for i in range(3200)]
  points = tb_events.loss_points(losses, batch=32)
  assert len(points) == 800 and points[0] == (4 * 32, (0 + 1 + 2 + 3) / 4)
  assert points[-1] == (3200 * 32, sum(losses[-4:]) / 4)
  assert [e for e, _ in points] == [32 * 4 * (j + 1) for j in range(800)]
  odd = tb_events.loss_points(list(range(1001)), batch=1)   # w = 2: the last window holds one step
  assert len(odd) == 501 and odd[0] == (2, 0.5) and odd[-1] == (1001, 1000.0)
  keep = tb_events.loss_points(list(range(1000)), batch=8)
  assert len(keep) == 1000 and keep[-1] == (8000, 999.0)
