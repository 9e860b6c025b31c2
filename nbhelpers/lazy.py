"""Lazy package exports: `package.name` imports its module on first use, so importing a package stays cheap."""

import importlib


def exports(package: str, table: dict):
    """`__getattr__` and `__dir__` for a package whose `table` maps exported names to submodules (relative)."""
    def __getattr__(name):
        if name in table:
            return getattr(importlib.import_module(f"{package}.{table[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(importlib.import_module(package).__dict__) | set(table))

    return __getattr__, __dir__
