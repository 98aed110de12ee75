"""The install: `make study` takes only what the main job needs, `make test` the test extras, and
the packaging metadata is current (no setuptools deprecation warnings)."""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _make_rules() -> dict[str, list[str]]:
  """target -> its recipe lines, from the Makefile (variables left unexpanded)."""
  rules, target = {}, None
  for line in (ROOT / "Makefile").read_text().splitlines():
    if line.startswith("\t") and target is not None:
      rules[target].append(line.strip())
    elif re.match(r"^[^\s#=]+:", line) and ":=" not in line:
      target = line.split(":", 1)[0]
      rules[target] = [line]
    else:
      target = None
  return rules


def test_study_installs_the_package_alone_and_test_adds_the_extras():
  rules = _make_rules()
  study_deps = rules["study"][0].split(":", 1)[1].split()
  assert study_deps == ["$(STAMP)"]
  install = [line for line in rules["$(STAMP)"] if "pip install" in line]
  assert install and all("-e ." in line and "[" not in line for line in install)
  test_deps = rules["test"][0].split(":", 1)[1].split()
  assert test_deps == ["$(TEST_STAMP)"]
  assert rules["$(TEST_STAMP)"][0].split(":", 1)[1].split() == ["$(STAMP)"]   # install, then extras
  assert any("'.[test]'" in line for line in rules["$(TEST_STAMP)"])


def test_pyproject_uses_current_license_metadata():
  meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
  assert isinstance(meta["project"]["license"], str)   # an SPDX expression, not a TOML table
  assert not any(c.startswith("License ::") for c in meta["project"].get("classifiers", []))
  setuptools = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
  assert setuptools and re.search(r">=\s*(\d+)", setuptools[0])
  assert int(re.search(r">=\s*(\d+)", setuptools[0]).group(1)) >= 77   # first to read SPDX strings
  test_extra = " ".join(meta["project"]["optional-dependencies"]["test"])
  names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in meta["project"]["dependencies"]}
  assert "pytest" in test_extra and not names & {"pytest", "pytest-xdist", "ray"}
