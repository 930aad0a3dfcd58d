"""Every package in the tree is listed in pyproject, so a non-editable install is complete."""
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_is_installed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = cfg["package-dir"]
    found = set()
    for init in (ROOT / "segwatch").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        found.add(".".join(rel.parts))
    for init in (ROOT / "adapters").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT / "adapters")
        found.add(".".join(("segwatch", "adapters") + rel.parts))
    assert mapping["segwatch.adapters"] == "adapters"
    assert found - listed == set(), f"packages missing from pyproject: {sorted(found - listed)}"
    assert listed - found == set(), f"pyproject lists packages that do not exist: {sorted(listed - found)}"
