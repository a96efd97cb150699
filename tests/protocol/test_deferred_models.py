"""Wire models build their schemas on first use on a PC, and all at once in the server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

COUNT = """
import importlib, pkgutil, sys
from pydantic import BaseModel
import protocol
for module in pkgutil.iter_modules(protocol.__path__):
    importlib.import_module(f"protocol.{module.name}")
if sys.argv[1] == "server":
    import server.api
todo, models = list(BaseModel.__subclasses__()), []
while todo:
    model = todo.pop()
    todo.extend(model.__subclasses__())
    if model.__module__.startswith("protocol."):
        models.append(model)
print(len(models), sum(1 for m in models if m.__pydantic_complete__))
"""


def built(side: str) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", COUNT, side], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    total, complete = map(int, done.stdout.split())
    return total, complete


def test_loading_the_wire_models_builds_none_of_them() -> None:
    total, complete = built("pc")
    assert total > 50
    assert complete == 0, "a model without defer_build costs every command its schema at start-up"


def test_the_server_builds_every_wire_model_before_its_routes_load() -> None:
    total, complete = built("server")
    assert complete == total


def test_a_deferred_model_validates_on_first_use() -> None:
    from protocol.schemas import UploadCreate

    body = UploadCreate(filename="bundle.tar.gz", size=10, sha256="0" * 64)
    assert body.size == 10
