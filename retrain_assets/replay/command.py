"""``retrain replay``: compare retraining policies on any table with a timestamp, features and a label."""

import argparse
import json
import sys

from retrain_assets.text import text_table


def add_replay_command(commands) -> None:
    replay = commands.add_parser(
        "replay",
        help="replay a labeled table batch by batch and compare retraining policies (accuracy vs retrains)",
        description="Trains on the first window, then walks the batches in time order: the production model "
                    "predicts each batch, labels arrive --label-delay batches later, the policy decides from what "
                    "was known then, and a candidate is promoted only if the gates pass.",
    )
    replay.add_argument("--data", required=True, help="a .csv, .csv.gz or .parquet file")
    replay.add_argument("--target", required=True, help="the label column")
    replay.add_argument("--time-column", required=True, help="the timestamp column (rows are replayed in its order)")
    replay.add_argument("--features", nargs="+", default=None, help="feature columns (default: every other column)")
    replay.add_argument("--task", choices=["classification", "regression"], default=None,
                        help="default: inferred from the target")
    replay.add_argument("--positive-label", default=None, help="classification: the class F1 refers to")
    size = replay.add_mutually_exclusive_group()
    size.add_argument("--batch-size", type=int, default=None, help="rows per batch")
    size.add_argument("--batch-freq", default=None, help="time per batch, e.g. 7D, 1D, 12h (default 7D)")
    replay.add_argument("--label-delay", type=int, default=1, help="batches before a batch's labels arrive (default 1)")
    replay.add_argument("--window", default=None,
                        help="first and sliding training window: rows (5000) or a duration (28D); default 4 batches")
    replay.add_argument("--gates", default=None, metavar="FILE|none",
                        help="YAML shaped like a model block of retrain.yaml (gates, decision, training, triggers, drift, "
                             "...); default gates: relative_to_production, significance, smoke_test. 'none': ungated "
                             "(every candidate that trains is promoted, no data-quality checks): what retraining can reach")
    replay.add_argument("--policy", action="append", default=None,
                        help="never | always | periodic:K | periodic:K+S (first at batch S) | ours | seed (repeatable; "
                             "default: never, always, periodic:4, ours, seed)")
    replay.add_argument("--tune", action="store_true", help="tune each candidate with Optuna (default: fixed parameters)")
    replay.add_argument("--json", action="store_true", help="print one JSON object per policy (a list)")
    replay.add_argument("--no-progress", action="store_true",
                        help="no progress bar on stderr (it never mixes with the results on stdout)")
    replay.set_defaults(handler=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    from retrain_assets.replay.data import prepare_table, read_table
    from retrain_assets.replay.harness import NO_GATES, replay_model, run_replay
    from retrain_assets.replay.policies import parse_policy

    policies = [parse_policy(p) for p in (args.policy or ["never", "always", "periodic:4", "ours", "seed"])]
    table = prepare_table(read_table(args.data), target=args.target, time_column=args.time_column,
                          features=args.features, task=args.task, batch_size=args.batch_size,
                          batch_freq=args.batch_freq, window=args.window)
    positive = args.positive_label
    if positive is not None and positive.lstrip("-").isdigit():
        positive = int(positive)
    model = replay_model(table, label_delay=args.label_delay, tune=args.tune, positive_label=positive,
                         overrides_file=args.gates)
    gated = args.gates != NO_GATES
    from tqdm import tqdm

    # Minutes of work: a bar on stderr (policy, batches done, rate, time left) says it is alive; stdout keeps
    # only the results, so --json output stays parseable.
    with tqdm(total=len(policies) * len(table.batches), unit="batch", file=sys.stderr, disable=args.no_progress,
              dynamic_ncols=True) as bar:
        def advance(policy: str, row: dict) -> None:
            bar.set_description(policy, refresh=False)
            bar.update()

        results = [r.to_dict() for r in run_replay(table, model, policies, args.label_delay, gated, on_batch=advance)]
    if args.json:
        print(json.dumps(results, indent=2, default=str))
        return 0
    primary = ("mean_accuracy", "mean_f1") if table.task == "classification" else ("mean_mae", "mean_r2")
    print(f"{len(table.batches)} batches after a first window of {len(table.first_window)} rows; "
          f"labels {args.label_delay} batch(es) late{'' if gated else '; ungated (--gates none)'}")
    print(text_table(
        ["policy", *primary, "retrains", "promotions", "rejected", "compute s"],
        [[r["policy"], *(f"{r[k]:.4f}" if r[k] is not None else "-" for k in primary), r["retrains"], r["promotions"],
          len(r["rejected_candidates"]), f"{r['compute_s']:.1f}"] for r in results],
    ))
    for r in results:
        for rejected in r["rejected_candidates"][:5]:
            print(f"  {r['policy']}: batch {rejected['batch']} candidate {rejected['version']} rejected by "
                  f"{', '.join(rejected['failed_gates']) or rejected['error']}")
    return 0
