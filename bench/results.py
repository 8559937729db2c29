"""The results table: one row per target, every timing a ratio against a baseline of the same run."""

import datetime
from dataclasses import dataclass, field
from pathlib import Path

RESULTS_PATH = Path(__file__).resolve().parent / "results.md"
COLUMNS = ("benchmark", "figure", "baseline", "ratio", "target", "met")


@dataclass
class Row:
    benchmark: str
    figure: str
    baseline: str
    ratio: float | None
    target: str
    met: bool

    def cells(self) -> list[str]:
        ratio = "n/a" if self.ratio is None else f"{self.ratio:.2f}"
        return [self.benchmark, self.figure, self.baseline, ratio, self.target, "yes" if self.met else "no"]


@dataclass
class Outcome:
    """What one benchmark found: its target rows and the notes that say what exactly was measured."""

    name: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # extra figures, printed and written below the table


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def render(outcomes: list[Outcome], machine: dict, mode: str, command: str) -> str:
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    heading = (
        f"## {today} — {machine['cores']} cores, {machine['memory_gb']} GB RAM, "
        f"PostgreSQL {machine['postgresql']}"
    )
    parts = [
        "# Benchmark results",
        "",
        f"Written by `{command}` ({mode} mode, Python {machine['python']}, code at "
        f"`{machine['revision']}`). Every timing is a ratio "
        "against a baseline measured in the same run on the same machine.",
        "",
        heading,
        "",
        table([row for outcome in outcomes for row in outcome.rows]),
        "",
    ]
    for outcome in outcomes:
        parts += [f"### {outcome.name}", ""]
        parts += [f"- {note}" for note in outcome.notes]
        if outcome.details:
            parts += ["", *outcome.details]
        parts.append("")
    return "\n".join(parts)


def write(path: Path, text: str) -> None:
    path.write_text(text)
