"""The installed layout: every package folder of the four parts is listed under `dragoon`.

pyproject.toml names its packages one by one (package-dir maps the repo's
top-level folders under ``dragoon``); a folder left out of that list would work
in an editable checkout and be missing from a real install. A folder of data only
(relay/migrations/postgresql, plain SQL) is no package: it ships as its package's data,
which the last test checks.
"""

from __future__ import annotations

import tomllib
from fnmatch import fnmatchcase

from tests.support.relay import REPO

PARTS = ("shared", "relay", "drone", "cockpit")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_under_the_dragoon_namespace() -> None:
    on_disk = {"dragoon"} | {
        "dragoon." + ".".join(init.parent.relative_to(REPO).parts)
        for part in PARTS for init in (REPO / part).rglob("__init__.py")
    }
    assert set(_pyproject()["tool"]["setuptools"]["packages"]) == on_disk


def test_no_bare_top_level_import_name_is_installed() -> None:
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping == {"dragoon": "dragoon", **{f"dragoon.{part}": part for part in PARTS}}


def test_the_postgresql_migrations_ship_as_the_relay_package_s_data() -> None:
    """relay/pg_migrate.py reads them with importlib.resources from ``dragoon.relay``."""
    patterns = _pyproject()["tool"]["setuptools"]["package-data"]["dragoon.relay"]
    steps = sorted((REPO / "relay" / "migrations" / "postgresql").glob("*.sql"))
    assert steps
    for step in steps:
        name = step.relative_to(REPO / "relay").as_posix()
        assert any(fnmatchcase(name, pattern) for pattern in patterns), name
