"""The README's promises that can drift: the two set-up commands and the config reference."""
import pathlib
import re

from segwatch.config import schema_reference

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
CI = (pathlib.Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()


def test_config_reference_is_generated_from_the_schema():
    m = re.search(r"<!-- BEGIN CONFIG REFERENCE[^>]*-->\n(.*?)<!-- END CONFIG REFERENCE -->", README, re.S)
    assert m, "config reference markers missing"
    assert m.group(1).strip() == schema_reference().strip(), "README config table is stale: regenerate it"


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    setup = [b.strip() for b in blocks if "pip install torch==2.13.0" in b]
    assert len(setup) == 2, "the README has exactly two set-up commands"
    demo, tests = setup
    assert demo.endswith("segwatch demo")
    assert tests in CI, "`.ci/run` must run the README's test command verbatim"
