"""Every part's tables in one SQLModel metadata, for Alembic and the tests."""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData
from sqlmodel import SQLModel

# The modules that define tables. A part not written yet is skipped; an import
# error inside a module that does exist is a real bug and is raised.
MODEL_MODULES = ("monitor.storage.models", "monitor.signals.models", "sender.models", "monitor.health.models")


def import_all_models() -> MetaData:
    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                continue
            raise
    return SQLModel.metadata
