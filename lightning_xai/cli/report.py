"""``lightning-xai report RUN_DIR -o report.html``: a self-contained HTML report of a monitored run."""

from __future__ import annotations

import argparse
import os


def parser() -> argparse.ArgumentParser:
    """The ``report`` subcommand's arguments."""
    report = argparse.ArgumentParser(
        prog="lightning-xai report",
        description="Write a self-contained HTML report (metric curves, method agreement, heatmap evolution) of a "
        "run monitored by ExplanationMonitor.",
    )
    report.add_argument("run_dir", help="the run's log directory (or its xai/ folder, or explanations.jsonl)")
    report.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: report.html)")
    return report


def run(argv: list[str]) -> None:
    """Write the report; a missing or empty run exits with what to do."""
    from lightning_xai.report import write_report

    options = parser().parse_args(argv)
    try:
        path = write_report(options.run_dir, options.output)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"lightning-xai report: {err}") from err
    print(f"[lightning-xai] report written to {os.path.abspath(path)}")
