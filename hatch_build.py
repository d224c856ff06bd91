"""The wheel's layout: a hatchling build hook (pyproject.toml names it under ``hooks.custom``).

A built wheel gets ``dnupdate.py`` as ``dnupdate/__init__.py`` and the shipped ``configs/`` as
``dnupdate/engine/config/bundled`` (``engine/config/builtin.py`` finds built-in names there). An
editable install (``uv sync``) gets neither: the checkout on ``sys.path`` already serves
``dnupdate.py``, the folders beside it and ``configs/``, and a ``dnupdate/__init__.py`` in
site-packages would shadow the checkout's.
"""

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class WheelLayout(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        build_data["force_include"]["dnupdate.py"] = "dnupdate/__init__.py"
        build_data["force_include"]["configs"] = "dnupdate/engine/config/bundled"
