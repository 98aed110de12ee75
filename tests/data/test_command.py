"""`jaxscale data build` and `jaxscale data list`."""

from jaxscale import cli
from jaxscale.data import builders


def test_build_then_list(tmp_path, capsys):
  root = str(tmp_path)
  assert cli.main(["data", "build", "jaxscale_digits/32px", "--data-dir", root]) == 0
  assert "built in" in capsys.readouterr().out
  assert builders.is_built("jaxscale_digits/32px", root)
  assert cli.main(["data", "build", "jaxscale_digits/32px", "--data-dir", root]) == 0
  assert "already prepared" in capsys.readouterr().out
  assert cli.main(["data", "list", "--data-dir", root]) == 0
  rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
  assert rows["jaxscale_digits/32px"].endswith("yes") and rows["jaxscale_digits/16px"].endswith("no")


def test_build_unknown_name_is_one_line_error(tmp_path, capsys):
  assert cli.main(["data", "build", "jaxscale_glyphs/7px", "--data-dir", str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("jaxscale: error: unknown config '7px'") and "\n" not in err
