"""storage/codecs/base.py: the one AudioFormat, and every codec module giving the interface it
declares (a codec imports base, never the package that looks it up)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from storage import codecs
from storage.codecs import base, g711, g722, l16, opus

CODECS = Path(codecs.__file__).parent


@pytest.mark.parametrize("module,name,clock,expected", [
    (g711, "PCMU", 8000, base.AudioFormat("PCMU", True, 8000, 1, 1, 7, 0xFF)),
    (g711, "PCMA", 8000, base.AudioFormat("PCMA", True, 8000, 1, 1, 6, 0xD5)),
    (g722, "G722", 8000, base.AudioFormat("G722", False, 16000, 2, 2, 1, 0)),
    (l16, "L16", 44100, base.AudioFormat("L16", False, 44100, 1, 2, 1, 0)),
    (opus, "OPUS", 48000, base.AudioFormat("OPUS", False, 48000, 1, 2, 1, 0)),
])
def test_each_codec_gives_the_format_of_base(module: base.Codec, name: str, clock: int,
                                             expected: base.AudioFormat) -> None:
    assert module.audio_format(name, clock, 1) == expected
    assert type(module.audio_format(name, clock, 1)) is base.AudioFormat is codecs.AudioFormat
    if module.available():
        assert codecs.audio_format(name.lower(), clock, 1) == expected
        assert isinstance(codecs.new_decoder(expected, clock, 1)(b"\x00" * 160), bytes)


def test_no_codec_imports_the_package_that_looks_it_up() -> None:
    for path in sorted(CODECS.glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        upward = [n.lineno for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module is None]
        assert not upward, f"{path.name}:{upward}: import what codecs share from .base"
