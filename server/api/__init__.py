"""The HTTP API under /v1, one module per resource.

The wire models of protocol/ build their schemas on first use (``defer_build``): a
PC's command loads many of them and validates few. The server validates them all
the time, and FastAPI must meet them built: its parameters are declared as the
route modules load, so every wire model is built here, before any of them does.
"""

from __future__ import annotations

import importlib
import pkgutil

from pydantic import BaseModel

import protocol


def _build_wire_models() -> None:
    for module in pkgutil.iter_modules(protocol.__path__):
        importlib.import_module(f"protocol.{module.name}")
    todo = list(BaseModel.__subclasses__())
    while todo:
        model = todo.pop()
        todo.extend(model.__subclasses__())
        if model.__module__.startswith("protocol.") and model.model_config.get("defer_build"):
            model.model_config["defer_build"] = False
            model.model_rebuild()


_build_wire_models()
