"""The rung table in docs/models.md matches the registry (parameter counts and FLOPs)."""

import pathlib
import re

import pytest

import jaxscale.models as models
from jaxscale.models import table

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "models.md"


def _doc_rows() -> dict[str, list[str]]:
  block = table.extract(DOC.read_text())
  rows = {}
  for line in block.splitlines():
    m = re.match(r"\| `([a-z_]+)` \|(.*)\|$", line)
    if m:
      rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
  return rows


def test_documented_table_is_the_generated_one():
  assert table.extract(DOC.read_text()) == table.block(), (
      "docs/models.md is stale: run python -m jaxscale.models.table docs/models.md")


def test_every_rung_documented_with_its_exact_parameter_count():
  rows = _doc_rows()
  assert list(rows) == models.names()
  for name, cells in rows.items():
    px = int(cells[1])
    assert px == models.spec(name).image_size
    assert int(cells[3].replace(",", "")) == models.param_count(name, 1000, px), name
    assert int(cells[4].replace(",", "")) == models.param_count(name, 52, px), name
    value, unit = cells[5].split()
    flops = float(value) * {"M": 1e6, "G": 1e9}[unit]
    assert flops == pytest.approx(models.flops_per_image(name, 1000, px), rel=5e-3), name


def test_update_rewrites_only_the_block(tmp_path):
  doc = tmp_path / "m.md"
  doc.write_text(f"intro\n{table.BEGIN}\n| stale |\n{table.END}\noutro\n")
  assert table.update(str(doc)) is True
  text = doc.read_text()
  assert text.startswith("intro\n") and text.endswith("\noutro\n")
  assert table.extract(text) == table.block()
  assert table.update(str(doc)) is False
