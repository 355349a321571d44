"""Run the whole benchmark suite and write one report.

    .venv/bin/python bench/run_all.py [--quick] [--only key1,key2] [--out bench/RESULTS.md]
    .venv/bin/python -m bench.run_all ...

Each benchmark is a module listed in BENCHMARKS that exposes
`run(quick: bool, workdir: Path) -> bench.common.Result`. They run one after another in the
order listed, each in its own temporary folder; a benchmark that raises gets an "error" row and
the others go on. The report has the machine line, the command, an overview table and one
section per benchmark; the plots the modules list are copied into `plots/` next to the report.
`--quick` is the smoke mode (about 2 minutes for everything, CI); the full run takes under
10 minutes on a 2-core machine.
"""

from __future__ import annotations

import os

# Before anything imports transformers or datasets: the suite never goes to the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):  # run as a script: import `bench` from the clone's root (and
    # not bench/'s own files as top-level modules)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.common import REPO, Result, machine_info, verdict  # noqa: E402

# key -> module, in the order they run. A module exposes run(quick, workdir) -> Result.
BENCHMARKS: dict[str, str] = {
    "tax": "bench.wrapper_tax",
    "orchestration": "bench.orchestration",
    "trainable": "bench.trainable_module",
    "cache": "bench.data_cache",
    "search": "bench.search_efficiency",
    "scale": "bench.scale",
    "gpu": "bench.gpu_module",
    "workers": "bench.workers",
}
# Run only when named with --only (not part of the 10-minute default run).
OPT_IN = ("workers",)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run_all.py", description="Run the mtsweep benchmark suite, write one report."
    )
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: small sizes, few repetitions (about 2 minutes in all)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated keys to run (default: all of "
                        f"{', '.join(k for k in BENCHMARKS if k not in OPT_IN)}; "
                        f"{', '.join(OPT_IN)} only when named)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md",
                   help="the report (default bench/RESULTS.md); plots go to plots/ beside it, "
                   "plots/NAME/ for RESULTS-NAME.md")
    a = p.parse_args(argv)
    if a.only:
        keys = [k.strip() for k in a.only.split(",") if k.strip()]
        unknown = [k for k in keys if k not in BENCHMARKS]
        if unknown:
            p.error(f"--only: unknown benchmark {', '.join(unknown)}; valid: "
                    f"{', '.join(BENCHMARKS)}")
        a.keys = keys
    else:
        a.keys = [k for k in BENCHMARKS if k not in OPT_IN]
    return a


def _quiet() -> None:
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")


def run_one(key: str, quick: bool, root: Path) -> tuple[Result, float]:
    """Import and run one benchmark; an exception becomes an error Result."""
    t0 = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=root))
    try:
        module = importlib.import_module(BENCHMARKS[key])
        result = module.run(quick=quick, workdir=workdir)
        if not isinstance(result, Result):
            raise TypeError(f"{BENCHMARKS[key]}.run returned {type(result).__name__}, "
                            "not a Result")
    except Exception as e:  # noqa: BLE001 - the suite goes on; the report says what failed
        message = f"{type(e).__name__}: {e}".strip().splitlines()[0]
        print(f"[bench] {key}: error: {message}", file=sys.stderr)
        result = Result(
            key=key, title=key, ratio=None, target="", met=None,
            summary=f"error: {message}",
            details_md="```\n" + traceback.format_exc()[-4000:] + "```\n",
        )
    return result, time.perf_counter() - t0


def _fmt_ratio(r: float | None) -> str:
    if r is None:
        return "–"
    # Three significant digits, trailing zeros kept: 1.004 shows as 1.00, not 1.
    return f"{r:#.3g}" if abs(r) < 100 else f"{r:.0f}"


def render(results: list[tuple[Result, float]], args: argparse.Namespace, machine: str,
           command: str, started: datetime, total_s: float, links: dict[str, list[str]]) -> str:
    lines = [
        "# mtsweep benchmarks",
        "",
        f"Date: {started:%Y-%m-%d %H:%M} UTC · mode: {'quick' if args.quick else 'full'} · "
        f"total {total_s:.0f} s",
        "",
        f"Machine: {machine}",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        "Every ratio compares a candidate with its baseline measured in the same run "
        "(alternating, the order flipped every repetition; median of the per-repetition "
        "ratios) or counts work rather than time: on a shared machine read the ratios, not "
        "the absolute timings. See `bench/README.md` for what each benchmark measures.",
        "",
        "## Overview",
        "",
    ]
    before = load_before() if not args.quick else None
    if before:
        lines += [f"*Before*: the full run of {before['date']} ({before['label']}; "
                  f"`{before['report']}`), from `bench/before.json`.", ""]
    lines += [
        "| benchmark | measured ratio | " + ("before | " if before else "")
        + "target | met? | summary |",
        "|---|---:|" + ("---:|" if before else "") + "---|---|---|",
    ]
    for res, _ in results:
        was = ""
        if before:
            old = before["ratios"].get(res.key)
            note = before.get("notes", {}).get(res.key)
            was = (_fmt_ratio(old) + (f" ({note})" if note else "") if old is not None
                   else "–") + " | "
        lines.append(
            f"| [{res.key}](#{_anchor(res)}) | {_fmt_ratio(res.ratio)} | {was}"
            f"{res.target or '–'} | "
            f"{verdict(res.met) if not res.summary.startswith('error:') else 'error'} | "
            f"{res.summary.replace('|', '/')} |"
        )
    lines += ["", "Run time per benchmark: " + ", ".join(
        f"{res.key} {secs:.0f} s" for res, secs in results) + ".", ""]
    for res, secs in results:
        lines += [f"## {_heading(res)}", "", res.details_md.rstrip(), ""]
        for rel in links.get(res.key, []):
            lines += [f"![{Path(rel).stem}]({rel})", ""]
        lines += [f"_{res.key}: {secs:.0f} s._", ""]
    return "\n".join(lines)


BEFORE_FILE = REPO / "bench" / "before.json"


def load_before() -> dict | None:
    """The ratios of an earlier full run to show beside this one (`bench/before.json`: label,
    date, report, ratios by key, optional notes by key), or None."""
    try:
        return json.loads(BEFORE_FILE.read_text())
    except (OSError, ValueError):
        return None


def _heading(res: Result) -> str:
    return f"{res.title} (`{res.key}`)" if res.title != res.key else f"`{res.key}`"


def _anchor(res: Result) -> str:
    """GitHub's anchor of the section heading."""
    text = _heading(res).lower()
    keep = "".join(c for c in text if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


def copy_plots(results: list[tuple[Result, float]], out: Path) -> dict[str, list[str]]:
    """Copy each result's files into plots/ beside the report (plots/NAME/ for a report named
    RESULTS-NAME.md, so that it leaves the main report's plots alone); {key: [relative paths]}."""
    sub = out.stem.removeprefix("RESULTS-") if out.stem.startswith("RESULTS-") else ""
    rel = f"plots/{sub}" if sub else "plots"
    plots = out.parent / rel
    links: dict[str, list[str]] = {}
    for res, _ in results:
        for f in res.files:
            f = Path(f)
            if not f.is_file():
                continue
            plots.mkdir(parents=True, exist_ok=True)
            dest = plots / f.name
            if f.resolve() != dest.resolve():
                shutil.copyfile(f, dest)
            links.setdefault(res.key, []).append(f"{rel}/{f.name}")
    return links


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet()
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    machine = machine_info()
    shown = [a for a in (sys.argv[1:] if argv is None else argv)]
    # The benchmarks' own settings from the environment belong to the command that ran.
    env = [f"{k}={shlex.quote(v)} " for k, v in sorted(os.environ.items())
           if k.startswith("MTSWEEP_BENCH_")]
    command = ("".join(env) + ".venv/bin/python bench/run_all.py"
               + "".join(f" {shlex.quote(a)}" for a in shown))
    print(f"[bench] {machine}", file=sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="mtsweep-bench-"))
    results: list[tuple[Result, float]] = []
    try:
        for i, key in enumerate(args.keys, 1):
            print(f"[bench] {i}/{len(args.keys)} {key} ({BENCHMARKS[key]}) "
                  f"{'quick' if args.quick else 'full'}…", file=sys.stderr)
            res, secs = run_one(key, args.quick, root)
            results.append((res, secs))
            print(f"[bench] {key}: {res.summary} ({secs:.0f} s)", file=sys.stderr)
        out = args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        links = copy_plots(results, out)
        report = render(results, args, machine, command, started, time.perf_counter() - t0, links)
        out.write_text(report)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"[bench] wrote {out} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
