"""Every module of this package is a set of pages (``@console.web.page``): importing the package
registers them all, so a new page module needs no list to be kept."""
from __future__ import annotations

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
