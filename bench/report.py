"""The printed table: one row per figure, its target and verdict, and a numbered method per row."""
from __future__ import annotations

from dataclasses import dataclass, field

PASS, FAIL, INFO, NOT_RUN = "PASS", "FAIL", "", "NOT RUN"


@dataclass
class Row:
    section: str
    figure: str
    value: str
    target: str = ""
    verdict: str = INFO
    method: int | None = None  # index into Report.methods


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def method(self, text: str) -> int:
        if text not in self.methods:
            self.methods.append(text)
        return self.methods.index(text) + 1

    def add(self, section: str, figure: str, value: str, target: str = "", verdict: str = INFO,
            method: str | None = None) -> None:
        self.rows.append(Row(section, figure, value, target, verdict, self.method(method) if method else None))

    def check(self, section: str, figure: str, value: str, target: str, ok: bool, method: str | None = None) -> None:
        self.add(section, figure, value, target, PASS if ok else FAIL, method)

    def render(self) -> str:
        head = ("section", "figure", "result", "target", "verdict", "how")
        cells = [(r.section, r.figure, r.value, r.target, r.verdict, f"[{r.method}]" if r.method else "") for r in self.rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)).rstrip(), "  ".join("-" * w for w in widths)]
        previous = None
        for c in cells:
            shown = ("" if c[0] == previous else c[0], *c[1:])
            previous = c[0]
            lines.append("  ".join(v.ljust(w) for v, w in zip(shown, widths, strict=False)).rstrip())
        lines.append("")
        lines.append("how each figure was measured:")
        lines += [f"  [{i}] {m}" for i, m in enumerate(self.methods, 1)]
        if self.notes:
            lines.append("")
            lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "rows": [r.__dict__ for r in self.rows],
            "methods": dict(enumerate(self.methods, 1)),
            "notes": self.notes,
        }


def rate(pkt_per_s: float) -> str:
    return f"{pkt_per_s / 1000:,.0f} k pkt/s" if pkt_per_s >= 10_000 else f"{pkt_per_s:,.0f} pkt/s"
