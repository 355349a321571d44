"""What every benchmark module of the suite shares: the Result it returns, the machine line, and
the alternating measurement.

A benchmark module exposes `run(quick: bool, workdir: Path) -> Result` and is listed in
`bench.run_all.BENCHMARKS`. It works in `workdir` (a fresh temporary folder that the runner
removes afterwards), writes its plots there too, and lists them in `Result.files`; the runner
copies them next to the report (`bench/plots/` for `bench/RESULTS.md`) and links them.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The real CS224N files, next to the clone (absent on CI: modules fall back to demo data).
REAL_DATA = REPO.parent / "shared" / "data" / "cs224n"


@dataclass
class Result:
    """What one benchmark measured.

    key: its registry key ("cache"); title: the section title.
    ratio: the headline ratio (None when the benchmark has none, e.g. a table of rates).
    target: the target as text ("≤ 0.05"); met: whether the ratio meets it (None: no target).
    summary: one line for the overview table; details_md: the section body (Markdown, headings
    from ### down); files: plots (PNG) it wrote, linked at the end of its section.
    """

    key: str
    title: str
    ratio: float | None
    target: str
    met: bool | None
    summary: str
    details_md: str
    files: list[Path] = field(default_factory=list)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - absent or broken: say so, the report still gets written
        return "absent"
    return getattr(mod, "__version__", "?")


def machine_info() -> str:
    """One line: CPU model, cores, RAM, load average, GPU (if torch sees one), and the versions
    of the stack. Printed at the top of every report: a high load means noisier ratios."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ram = _ram_gib()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            gpu = f"{n} × {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001
        pass
    versions = " · ".join(
        f"{m} {_version(m)}"
        for m in ("torch", "ray", "optuna", "mlflow", "accelerate", "transformers")
    )
    return (
        f"{cpu_model()} · {os.cpu_count()} cores ({usable} usable) · "
        f"{f'{ram:.0f} GiB RAM' if ram else 'RAM unknown'} · "
        f"load average {' / '.join(f'{x:.2f}' for x in load) if load else 'n/a'} (1/5/15 min) · "
        f"{gpu} · Python {platform.python_version()} · {versions}"
    )


def _measure(fn: Callable[[], float | None]) -> float:
    """fn's own measurement when it returns a number, else its wall time in seconds."""
    t0 = time.perf_counter()
    got = fn()
    return float(got) if got is not None else time.perf_counter() - t0


def alternate(
    candidate: Callable[[], float | None],
    baseline: Callable[[], float | None],
    reps: int,
) -> tuple[float, list[tuple[float, float]]]:
    """Run candidate and baseline `reps` times each, alternating, the order flipped every
    repetition (candidate first in even ones). A callable returns its own measurement (e.g. the
    seconds of the part that matters) or None to be timed whole.

    Returns (median of candidate ÷ baseline over the repetitions, [(candidate, baseline), …]).
    On a shared machine the load drifts between minutes; neighbouring runs see about the same
    load, so their ratio means more than either absolute time.
    """
    if reps < 1:
        raise ValueError(f"reps must be ≥ 1, got {reps}")
    pairs: list[tuple[float, float]] = []
    for rep in range(reps):
        if rep % 2 == 0:
            c = _measure(candidate)
            b = _measure(baseline)
        else:
            b = _measure(baseline)
            c = _measure(candidate)
        pairs.append((c, b))
    return statistics.median(c / b for c, b in pairs), pairs


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "**NOT met**")


def md_table(header: list[str], rows: list[list[object]], align: str | None = None) -> str:
    """A Markdown table; `align` is one character per column: l (left) or r (right)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def plot_setup():
    """matplotlib.pyplot with the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    """Lay out, write (PNG, 110 dpi) and close a figure made with `plot_setup()`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
