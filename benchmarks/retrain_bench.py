"""Retraining benchmark: dataset build + data quality + tuning + training + every gate on 100k x 20.

Run: ``make bench`` or ``.venv/bin/python benchmarks/retrain_bench.py [--rows 100000] [--trials 5]``.
Prints a per-stage breakdown and rewrites the "Retraining" section of benchmarks/RESULTS.md. The target
(issue: retraining pipeline) is the whole retrain under 60 s on 2 cores. The baseline, measured in the
same run, is one plain fit of the same pipeline with fixed parameters: the ratio says what tuning, CV
and the gates cost on top of the unavoidable training.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import machine_description, update_results  # noqa: E402
from retrain_assets.settings import settings_from_dict  # noqa: E402
from retrain_assets.training import (  # noqa: E402
    clean_labeled_rows,
    content_hash,
    evaluate_gates,
    select_window,
    split_dataset,
    train_candidate,
    validate_training_data,
)
from retrain_assets.training.pipeline import build_pipeline, default_params  # noqa: E402


def synthetic(rows: int, seed: int) -> tuple[pd.DataFrame, list[dict]]:
    """16 numeric + 4 categorical features with a nonlinear binary label."""
    rng = np.random.default_rng(seed)
    data = {f"x{i}": rng.normal(size=rows) for i in range(16)}
    for i in range(4):
        data[f"c{i}"] = rng.choice([f"level{j}" for j in range(5 + 3 * i)], rows)
    frame = pd.DataFrame(data)
    logit = frame.x0 * 1.5 - frame.x1 + np.sin(frame.x2 * 2) + (frame.c0 == "level1") * 1.2 - 0.3
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame["timestamp"] = pd.Timestamp.now(tz="UTC") - pd.to_timedelta(np.arange(rows)[::-1], unit="s")
    frame["request_id"] = [f"r{i}" for i in range(rows)]
    frame["safe_to_send"] = True
    features = [{"name": f"x{i}", "type": "numeric"} for i in range(16)] + [
        {"name": f"c{i}", "type": "categorical"} for i in range(4)
    ]
    return frame, features


def run(rows: int, trials: int) -> dict:
    frame, features = synthetic(rows, seed=0)
    model = settings_from_dict({"models": [{
        "name": "bench", "task": "classification", "target": "label", "features": features,
        "training": {"tuning_trials": trials},
        "gates": {"min_precision": 0.5, "min_recall": 0.5, "min_accuracy": 0.5},
    }]}).models[0]
    stages: dict[str, float] = {}

    def timed(name, fn):
        started = time.perf_counter()
        result = fn()
        stages[name] = time.perf_counter() - started
        return result

    def build():
        cleaned = clean_labeled_rows(frame, model)
        window, _ = select_window(cleaned, model.dataset)
        split = split_dataset(window, model, model.dataset, seed=0)
        content_hash(window)
        return window, split

    window, split = timed("dataset build (clean, window, split, hash)", build)
    quality = timed("data quality (Great Expectations, incl. import)", lambda: validate_training_data(window, model))
    trained = timed(f"tuning ({trials} trials x {model.training.cv_folds}-fold CV) + final fit",
                    lambda: train_candidate(split, model, model.training))
    production = train_candidate(split, model, model.training.model_copy(update={"tuning_trials": 0})).pipeline
    gates = timed("all gates vs a production model", lambda: evaluate_gates(
        trained.pipeline, production, split.test, model, model.gates, 1_000_000, 1_000_000, seed=0))

    def baseline():
        data = split.train_and_validation
        build_pipeline(model, default_params(model, model.training), 0).fit(data[model.feature_names], data[model.target])

    timed("baseline: one plain fit, fixed parameters", baseline)
    baseline_s = stages["baseline: one plain fit, fixed parameters"]
    total = sum(v for k, v in stages.items() if not k.startswith("baseline"))
    return {
        "rows": rows, "trials": trials, "stages": stages, "total_s": total, "baseline_s": baseline_s,
        "quality_passed": all(r.passed for r in quality), "gates": {g.name: g.passed for g in gates},
        "test_metrics": trained.metrics,
    }


def report(result: dict) -> str:
    lines = [
        f"{result['rows']:,} rows x 20 features (16 numeric, 4 categorical), {result['trials']} Optuna trials,"
        " HistGradientBoosting, 5-fold CV, in-process:",
        "",
        "| stage | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in result["stages"].items()]
    lines += [
        f"| **total retrain (excluding the baseline)** | **{result['total_s']:.2f}** |",
        "",
        f"Target: total under 60 s -> **{'met' if result['total_s'] < 60 else 'NOT met'}**. "
        f"Ratio to one plain fit measured in the same run: {result['total_s'] / result['baseline_s']:.1f}x.",
        "Candidate test metrics: " + ", ".join(f"{k} {v:.3f}" for k, v in result["test_metrics"].items()) + ".",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = parser.parse_args()
    result = run(args.rows, args.trials)
    text = report(result)
    print(text)
    if not args.no_write:
        update_results("Retraining", f"Command: `python benchmarks/retrain_bench.py --rows {args.rows} "
                       f"--trials {args.trials}`\n\n{text}\n\nMachine: {machine_description()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
