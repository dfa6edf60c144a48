"""Decision benchmark: the cost of one model's retrain decision at 100,000 monitored rows.

Run: ``make bench`` or ``.venv/bin/python benchmarks/decision_bench.py [--rows 100000]``. It trains the
demo's churn model on 4,000 simulated rows (reference pack included), then times, median of ``--repeats``:

* ``decide``: the pure decision on evidence of ``--rows`` labeled rows since deployment and a recent window
  of ``--rows`` inputs (Page-Hinkley, the newest batch, the large-drop metrics, concept drift, the weighted
  drift against its calibrated threshold, CBPE, label volume, age); the seed rule set on the same evidence;
* ``gather_evidence``: scoring those rows with the production model and the drift tests (what the monitoring
  run does before it decides);
* the baseline, measured in the same run: one ``predict_proba`` of the same rows with the same model.

Target (issue: decisions): the decision well under a second at 100,000 rows.
"""

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import machine_description, update_results  # noqa: E402
from retrain_assets.monitoring import ReferenceProfile, build_reference_pack, decide, gather_evidence  # noqa: E402
from retrain_assets.settings import settings_from_dict  # noqa: E402
from retrain_assets.simulate import TrafficScenario, generate_traffic, model_config  # noqa: E402
from retrain_assets.training import split_dataset, train_candidate  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    models = {policy: settings_from_dict({"models": [{**model_config(), "training": {"tuning_trials": 0},
                                                      "decision": {"policy": policy}}]}).models[0]
              for policy in ("evidence", "seed")}
    model = models["evidence"]
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    history = generate_traffic(4000, start=start, interval=dt.timedelta(seconds=10), seed=1)
    split = split_dataset(history, model, model.dataset, seed=0)
    pipeline = train_candidate(split, model, model.training).pipeline
    profile = ReferenceProfile.from_frame(split.train, numeric=model.numeric_features,
                                          categorical=model.categorical_features, settings=model.drift)
    pack = build_reference_pack(pipeline, model, history, split.test, profile, model.decision)
    monitored = generate_traffic(args.rows, start=start + dt.timedelta(days=2), interval=dt.timedelta(seconds=1),
                                 scenario=TrafficScenario(covariate_drift=0.3), seed=2)

    def gather():
        return gather_evidence(model, pipeline=pipeline, profile=profile, pack=pack, recent=monitored,
                               labeled=monitored, newest_batch=args.rows // 10, baseline={"accuracy": 0.9, "f1": 0.85},
                               new_labels=args.rows, training_rows=len(history), model_age_days=3.0)

    evidence = gather()
    features = monitored[model.feature_names]
    timings = {
        "decide (evidence policy)": median_seconds(lambda: decide(evidence, models["evidence"]), args.repeats),
        "decide (seed rule set)": median_seconds(lambda: decide(evidence, models["seed"]), args.repeats),
        "gather_evidence (score the rows, drift tests)": median_seconds(gather, args.repeats),
        "baseline: one predict_proba of the same rows": median_seconds(lambda: pipeline.predict_proba(features), args.repeats),
    }
    decision = decide(evidence, model)
    baseline = timings["baseline: one predict_proba of the same rows"]
    lines = [
        f"{args.rows:,} labeled rows since deployment and {args.rows:,} recent inputs, the demo's churn model "
        f"(HistGradientBoosting, 7 features); median of {args.repeats}. The decision: "
        f"{'retrain' if decision.retrain else 'no retrain'} ({decision.trigger or decision.severity}).",
        "",
        "| step | ms | vs one predict_proba |",
        "|---|---:|---:|",
        *(f"| {name} | {seconds * 1000:.1f} | {seconds / baseline:.2f}x |" for name, seconds in timings.items()),
        "",
        f"Target: the decision well under a second at {args.rows:,} rows -> "
        f"**{'met' if timings['decide (evidence policy)'] < 1.0 else 'NOT met'}** "
        f"({timings['decide (evidence policy)'] * 1000:.0f} ms; with gathering the evidence "
        f"{(timings['decide (evidence policy)'] + timings['gather_evidence (score the rows, drift tests)']) * 1000:.0f} ms).",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_results("Decision", f"Command: `python benchmarks/decision_bench.py --rows {args.rows}`\n\n{text}\n\n"
                       f"Machine: {machine_description()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
