"""Only the C extension lives here; everything else about the package is in pyproject.toml.

capture._fastpath runs capture's per-packet loops in C (see its header). Without a compiler the
package still works: capture falls back to the same loops in Python and the service says so.
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "capture._fastpath",
            ["capture/_fastpath.c"],
            # -ffp-contract=off: no fused multiply-add, so jitter and placement equal Python's to the bit
            extra_compile_args=["-O2", "-ffp-contract=off", "-fno-strict-aliasing", "-Wall", "-Wextra",
                                "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
        )
    ]
)
