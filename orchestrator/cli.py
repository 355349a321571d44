"""The `mtsweep` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from trainables import cli as trainable_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mtsweep",
        description="Sweeps over multi-task BERT fine-tuning (SST-5, QQP, STS-B).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train one trial without Ray and print its dev metrics")
    trainable_cli.add_train_arguments(t)
    t.set_defaults(run=trainable_cli.run_train)

    from orchestrator import launch

    lp = sub.add_parser("launch", help="run a sweep: Optuna + Ray Tune + Ray Train + MLflow")
    launch.add_launch_arguments(lp)
    lp.set_defaults(run=launch.run_launch)

    from orchestrator import reproduce

    rp = sub.add_parser("reproduce", help="train a recorded trial again and compare its metrics")
    reproduce.add_reproduce_arguments(rp)
    rp.set_defaults(run=reproduce.run_reproduce)

    from orchestrator import report

    rep = sub.add_parser("report", help="results table, importances and plots of a sweep")
    report.add_report_arguments(rep)
    rep.set_defaults(run=report.run_report)

    from orchestrator import predict

    pp = sub.add_parser("predict", help="write CS224N prediction files from a trained model")
    predict.add_predict_arguments(pp)
    pp.set_defaults(run=predict.run_predict)

    from orchestrator import resume

    rs = sub.add_parser("resume", help="continue an interrupted sweep")
    resume.add_resume_arguments(rs)
    rs.set_defaults(run=resume.run_resume)

    from orchestrator import ui

    up = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the tracking store")
    ui.add_ui_arguments(up)
    up.set_defaults(run=ui.run_ui)

    data = sub.add_parser("data", help="data utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    demo = data_sub.add_parser("demo", help="write the synthetic demo data set (CS224N layout)")
    trainable_cli.add_demo_arguments(demo)
    demo.set_defaults(run=trainable_cli.run_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # Never reach for a hub unless the user's environment says so; tests set these offline.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    trainable_cli.setup_logging()
    # MLflow announces at INFO that it creates (or updates) a new SQLite store's tables.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    return trainable_cli.guarded(args.run, args)


if __name__ == "__main__":
    sys.exit(main())
