"""Retraining policies replayed on real data: accuracy against number of retrains (`make bench-replay`).

* Electricity (NSW market, Harries 1999; vendored in benchmarks/data): real concept drift; weekly batches
  of 336 half-hours, a 4-week first and sliding window, labels one batch late.
* Electricity with its rows in random order (the timestamps kept in place): a no-drift control where every
  retrain is needless.
* US-census employment, Massachusetts (bundled in NannyML's wheel, installed with --no-deps; read from
  its files, nannyml is never imported): the second control; 2015 trains the first model, 2016-2018
  arrive in batches of 5,000 rows, labels one batch late.
* Synthetic (the project's traffic simulator): known drift points, for detection delay and false triggers.

Every policy runs on the product's own code (`retrain_assets.replay`) with the product's defaults on every
dataset: `ours` (the evidence policy), `seed` (the design documents' rule set with its point gates), `always`
gated and ungated (`--gates none`: the reference for what retraining can reach), `never`, and `periodic:K`
at the K nearest to `ours`' retrain count, averaged over its K phases. One labelled extra row, `ours (no age
limit)`, shows what the default `max_model_age_days: 30` adds. Each retrain's row names its deciding signal.
Policies run two at a time, each with one OpenMP thread (two threads per process on two cores slow
HistGradientBoosting tenfold). Writes benchmarks/results/*.png, *.json and the "Replay on real data"
section of RESULTS.md.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/sklearn load: see the docstring

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime as dt  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import machine_description, update_results  # noqa: E402
from retrain_assets.replay.data import prepare_table, read_table  # noqa: E402
from retrain_assets.replay.harness import Replay, replay_model  # noqa: E402
from retrain_assets.replay.policies import parse_policy  # noqa: E402
from retrain_assets.simulate import TrafficScenario, generate_traffic  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
ELECTRICITY = HERE / "data" / "electricity.csv.gz"
NO_AGE = "decision:\n  max_model_age_days: null\n"
SYNTHETIC = {"batch_rows": 500, "clean": 12, "total": 36}


def census_frame() -> pd.DataFrame:
    """Reference (2015) and analysis (2016-2018) rows with their targets, from NannyML's installed files."""
    try:
        files = {str(f).rsplit("/", 1)[-1]: f.locate() for f in importlib.metadata.files("nannyml") or []
                 if "employment_MA" in str(f)}
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit("the census data ships in NannyML's wheel: make install-bench "
                         "(pip install --no-deps nannyml==0.13.1 pyarrow)") from None
    reference = pd.read_parquet(files["employment_MA_reference.pq"])
    analysis = pd.read_parquet(files["employment_MA_analysis.pq"]).merge(
        pd.read_parquet(files["employment_MA_analysis_target.pq"]), on="id")
    frame = pd.concat([reference, analysis], ignore_index=True).drop(columns=["prediction", "predicted_probability"])
    # Only the year is published: rows are spread evenly over their year in file order.
    position = frame.groupby("year").cumcount() / frame.groupby("year")["id"].transform("count")
    frame["timestamp"] = pd.to_datetime(frame["year"].astype(str) + "-01-01", utc=True) + pd.to_timedelta(position * 365, unit="D")
    return frame.drop(columns=["id", "year"])


def synthetic_frame(batch_rows: int, clean: int, drifts: list[tuple[int, TrafficScenario]], total: int) -> pd.DataFrame:
    """Churn traffic: ``clean`` batches as trained, then each (start batch, scenario) until the next."""
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    pieces, edges = [], [(0, TrafficScenario()), *drifts, (total, None)]
    for (first, scenario), (end, _) in zip(edges[:-1], edges[1:]):
        rows = (end - first) * batch_rows
        piece = generate_traffic(rows, start=start + dt.timedelta(hours=first * batch_rows), interval=dt.timedelta(hours=1),
                                 scenario=scenario, seed=first + 1, id_prefix=f"s{first}")
        pieces.append(piece)
    frame = pd.concat(pieces, ignore_index=True)
    return frame.drop(columns=["request_id", "safe_to_send"], errors="ignore")


def load(name: str):
    """(table, label delay) of a dataset."""
    if name in ("electricity", "shuffled"):
        frame = read_table(ELECTRICITY)
        if name == "shuffled":  # rows in random order under the same clock: nothing drifts
            stamps = frame["timestamp"].copy()
            frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True).assign(timestamp=stamps.to_numpy())
        return prepare_table(frame, target="class", time_column="timestamp", batch_freq="7D", window="28D")
    if name == "census":
        return prepare_table(census_frame(), target="employed", time_column="timestamp", batch_size=5000, window="68785")
    drifts = [(12, TrafficScenario(covariate_drift=1.0)), (24, TrafficScenario(covariate_drift=1.0, concept_drift=True))]
    raw = synthetic_frame(SYNTHETIC["batch_rows"], SYNTHETIC["clean"], drifts, SYNTHETIC["total"])
    return prepare_table(raw, target="churned", time_column="timestamp", batch_size=SYNTHETIC["batch_rows"],
                         window=str(4 * SYNTHETIC["batch_rows"]))


def run_one(job: tuple[str, str, str | None, bool, str]) -> dict:
    """One policy on one dataset, in a worker process: (dataset, policy, overrides YAML, gated, label)."""
    dataset, policy, overrides, gated, label = job
    table = load(dataset)
    path = None
    if overrides:
        handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        handle.write(overrides)
        handle.close()
        path = handle.name
    model = replay_model(table, label_delay=1, overrides_file=path)
    started = time.perf_counter()
    result = Replay(table, model, parse_policy(policy), 1, gated).run()
    print(f"{dataset}: {label} done in {time.perf_counter() - started:.0f} s", flush=True)
    out = result.to_dict()
    out["policy"] = label
    return out


def closest_period(batches: int, retrains: int) -> int:
    """K whose periodic retrain count (decisions at batches 1..N-1, one every K) is closest to ``retrains``."""
    return min(range(1, batches), key=lambda k: (abs((batches - 1) // k - retrains), k))


def run_dataset(name: str, pool: ProcessPoolExecutor) -> tuple[object, list[dict]]:
    table = load(name)
    jobs = [(name, "never", None, True, "never"), (name, "always", None, True, "always"),
            (name, "always", None, False, "always (ungated)"), (name, "ours", None, True, "ours"),
            (name, "seed", None, True, "seed"), (name, "ours", NO_AGE, True, "ours (no age limit)")]
    runs = list(pool.map(run_one, jobs))
    ours = next(r for r in runs if r["policy"] == "ours")
    k = closest_period(len(table.batches), ours["retrains"])
    phases = list(pool.map(run_one, [(name, f"periodic:{k}+{s}", None, True, f"periodic:{k}+{s}") for s in range(1, k + 1)]))
    return table, runs + phases


def signals(run: dict) -> str:
    counts = collections.Counter(b.get("trigger") for b in run["batches"] if b["retrained"])
    return ", ".join(f"{k} {n}" for k, n in counts.most_common()) or "-"


def rejections(run: dict) -> str:
    counts = collections.Counter(g for c in run["rejected_candidates"] for g in (c["failed_gates"] or ["error"]))
    return ", ".join(f"{g} x{n}" for g, n in sorted(counts.items())) or "-"


def markdown_table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def summary_table(runs: list[dict]) -> str:
    headers = ["policy", "mean accuracy", "mean F1", "retrains", "promotions", "deciding signals", "rejected (gate x n)",
               "compute s"]
    phases = [r for r in runs if r["policy"].startswith("periodic:")]
    rows = [[r["policy"], f"{r['mean_accuracy']:.4f}", f"{r['mean_f1']:.4f}", r["retrains"], r["promotions"], signals(r),
             rejections(r), f"{r['compute_s']:.0f}"] for r in runs if not r["policy"].startswith("periodic:")]
    if phases:
        accuracy = [r["mean_accuracy"] for r in phases]
        rows.append([f"{phases[0]['policy'].split('+')[0]} (mean of {len(phases)} phases)",
                     f"{np.mean(accuracy):.4f} ({min(accuracy):.4f}-{max(accuracy):.4f})",
                     f"{np.mean([r['mean_f1'] for r in phases]):.4f}", f"{np.mean([r['retrains'] for r in phases]):.1f}",
                     f"{np.mean([r['promotions'] for r in phases]):.1f}", "schedule", "-",
                     f"{np.mean([r['compute_s'] for r in phases]):.0f}"])
    return markdown_table(headers, rows)


def plot(name: str, runs: list[dict], drift_batches=()) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    for r in runs:
        if r["policy"].startswith("periodic:") and not r["policy"].endswith("+1"):
            continue  # one phase is enough for the picture
        acc = [b["accuracy"] for b in r["batches"]]
        line = ax.plot(acc, label=f"{r['policy']} ({r['mean_accuracy']:.3f}, {r['retrains']} retrains)", linewidth=1)[0]
        if not r["policy"].startswith("always"):
            promoted = [b["batch"] for b in r["batches"] if b["promoted"]]
            rejected = [b["batch"] for b in r["batches"] if b["retrained"] and not b["promoted"]]
            ax.scatter(promoted, [acc[i] for i in promoted], marker="o", s=14, color=line.get_color())
            ax.scatter(rejected, [acc[i] for i in rejected], marker="x", s=14, color=line.get_color())
    for batch in drift_batches:
        ax.axvline(batch, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("batch")
    ax.set_ylabel("accuracy of the serving model")
    ax.set_title(f"{name}: accuracy per batch (o = promoted retrain, x = rejected candidate)")
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name.lower().split()[0]}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def detection(runs: list[dict], clean_batches: int, drift_batches: list[int], total: int) -> str:
    rows = []
    for r in runs:
        retrained = [b["batch"] for b in r["batches"] if b["retrained"]]
        false = [b for b in retrained if b < clean_batches]
        bounds = [*drift_batches, total]
        delays = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            hits = [b for b in retrained if start <= b < end]
            delays.append(str(hits[0] - start) if hits else "missed")
        rows.append([r["policy"], len(false), ", ".join(delays), r["retrains"], f"{r['mean_accuracy']:.4f}", signals(r)])
    return markdown_table(["policy", f"false triggers (batches 1-{clean_batches - 1})", "detection delay per drift (batches)",
                           "retrains", "mean accuracy", "deciding signals"], rows)


def current_section() -> str:
    """The dataset subsections of RESULTS.md's replay section as the last run wrote them."""
    text = (HERE / "RESULTS.md").read_text()
    start = text.find("## Replay on real data\n")
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    body = text[start:end if end > 0 else len(text)]
    first = body.find("### ")
    return body[first:body.rfind("\nMachine: ")] if first >= 0 else ""


def splice(previous: str, fresh: dict[str, str]) -> list[str]:
    """The previous run's subsections, with those of ``fresh`` (dataset -> subsection) put in their place;
    a subsection runs from its ``### `` title to its picture line ``![dataset](...)``."""
    out = []
    for name in ("electricity", "shuffled", "census", "synthetic"):
        if name in fresh:
            out.append(fresh[name])
            continue
        marker = f"![{name}](results/{name}.png)"
        end = previous.find(marker)
        if end < 0:
            continue
        start = previous.rfind("### ", 0, end)  # its title: no subsection holds another
        out.append(previous[start:end + len(marker)] + "\n")
    return out


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["electricity", "shuffled", "census", "synthetic"], action="append")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    wanted = args.only or ["electricity", "shuffled", "census", "synthetic"]
    sections = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for name in wanted:
            table, runs = run_dataset(name, pool)
            RESULTS_DIR.mkdir(exist_ok=True)
            (RESULTS_DIR / f"{name}.json").write_text(json.dumps(runs, indent=1, default=str))
            by = {r["policy"]: r for r in runs}
            ours, always, ungated = by["ours"], by["always"], by["always (ungated)"]
            phases = [r for r in runs if r["policy"].startswith("periodic:")]
            periodic = float(np.mean([r["mean_accuracy"] for r in phases]))
            batches = len(table.batches)
            share = ours["retrains"] / batches
            age = sum(1 for b in ours["batches"] if b.get("trigger") == "model_age")
            lines = []
            if name == "electricity":
                picture = plot("Electricity", runs)
                ratio = ours["mean_accuracy"] / ungated["mean_accuracy"]
                lines = [
                    f"ours / ungated always mean accuracy: {ratio:.1%} (target >= 99 %: {verdict(ratio >= 0.99)}); retrains "
                    f"{ours['retrains']} / {always['retrains']} = {ours['retrains'] / always['retrains']:.0%} (target <= 35 %: "
                    f"{verdict(ours['retrains'] <= 0.35 * always['retrains'])}; {age} of them for model age)",
                    f"ours vs {phases[0]['policy'].split('+')[0]} (nearest retrain count, mean of its {len(phases)} phases): "
                    f"{ours['mean_accuracy']:.4f} vs {periodic:.4f} ({verdict(ours['mean_accuracy'] >= periodic)})",
                    f"gates: gated always / ungated always: {always['mean_accuracy'] / ungated['mean_accuracy']:.2%} "
                    f"(target >= 99.5 %: {verdict(always['mean_accuracy'] >= 0.995 * ungated['mean_accuracy'])}); "
                    f"{len(always['rejected_candidates'])} of {always['retrains']} candidates rejected",
                    f"ours vs seed: {ours['mean_accuracy']:.4f} with {ours['retrains']} retrains vs "
                    f"{by['seed']['mean_accuracy']:.4f} with {by['seed']['retrains']}",
                ]
                title = (f"### Electricity (NSW, Harries 1999)\n\n{batches} weekly batches of 336 rows after a 4-week first "
                         "window; sliding 4-week training window; labels one batch late.")
            elif name == "shuffled":
                picture = plot("Shuffled electricity", runs)
                no_age = by["ours (no age limit)"]
                lines = [
                    f"ours retrains on {share:.0%} of batches (target <= 5 %: {verdict(share <= 0.05)}); {age} of its "
                    f"{ours['retrains']} retrains are for model age; without the age limit {no_age['retrains']} "
                    f"({no_age['retrains'] / batches:.0%})",
                    f"seed retrains on {by['seed']['retrains'] / batches:.0%} of batches",
                ]
                title = (f"### Electricity, rows in random order (no-drift control)\n\nThe same {batches} weekly batches with "
                         "the rows shuffled under the same clock: nothing drifts, every retrain is needless.")
            elif name == "census":
                picture = plot("Census", runs)
                gap = 100 * (ours["mean_accuracy"] - always["mean_accuracy"])
                no_age = by["ours (no age limit)"]
                lines = [
                    f"ours retrains on {share:.0%} of batches (target <= 10 %: {verdict(share <= 0.10)}); {age} of its "
                    f"{ours['retrains']} retrains are for model age (a batch spans 26 days here); without the age limit "
                    f"{no_age['retrains']} ({no_age['retrains'] / batches:.0%})",
                    f"accuracy {gap:+.2f} points vs always (target within 0.5: {verdict(abs(gap) <= 0.5)})",
                ]
                title = (f"### US-census employment, Massachusetts (control)\n\n2015 ({len(table.first_window):,} rows) trains the "
                         f"first model; 2016-2018 arrive in {batches} batches of 5,000 rows; labels one batch late; sliding "
                         "window of 68,785 rows.")
            else:
                first = 4
                drift_batches = [SYNTHETIC["clean"] - first, 24 - first]
                picture = plot("Synthetic", runs, drift_batches)
                lines = [detection(runs, drift_batches[0], drift_batches, batches),
                         "Targets: each drift detected within 2 batches, zero false triggers on the clean stretch."]
                title = (f"### Synthetic churn traffic with known drift points\n\n{batches} batches of "
                         f"{SYNTHETIC['batch_rows']} rows after a first window of 4; covariate drift from batch "
                         f"{drift_batches[0]}, concept drift from batch {drift_batches[1]}; labels one batch late.")
            body = "\n\n".join([title, summary_table(runs),
                                "\n".join(f"- {line}" if not line.startswith("|") else line for line in lines)])
            sections.append(f"{body}\n\n![{name}](results/{picture.name})\n")
    if args.only:  # keep the other datasets' subsections of the last full run
        sections = splice(current_section(), dict(zip(wanted, sections)))
    text = (
        "Command: `make bench-replay` (= `python benchmarks/replay_real.py`). Every policy runs the product's own "
        "dataset, data-quality, training, reference-pack, decision and gate code with the product's defaults; gates: "
        "relative_to_production, significance, smoke_test (`gates.comparison: significance`; `seed` uses point gates); "
        "fixed model parameters; time-based test split.\n\n" + "\n".join(sections)
        + f"\nMachine: {machine_description()}"
    )
    update_results("Replay on real data", text)
    print(text)


if __name__ == "__main__":
    main()
