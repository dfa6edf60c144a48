"""Live comparisons of two model versions: the post-deploy watch, the shadow decision and the canary steps.

Both ask one question, "does the new model do worse than the old one on live traffic?", with the same
tolerances (a candidate the watch would roll back must not be promoted out of shadow):

* quality: classification is worse when live F1 falls by more than ``watch_f1_drop``; regression when live
  MAE grows by more than ``watch_mae_increase`` (relative). The watch compares what each version served
  (each over the last monitoring window of rows it answered); the shadow decision compares
  the candidate and production on the *same* labeled requests, which removes traffic differences.
* absolute criteria (seed 002): live accuracy below ``rollback_min_accuracy``, p99 request latency above
  ``rollback_max_latency_ms`` or a share of failed requests above ``rollback_max_error_rate``, whatever the
  previous model did; judged in the watch and in the close watch.
* a canary step is judged like the watch (quality, latency, absolute criteria), the canary against
  production over the same period of live traffic (an A/B comparison), and fails outright when a server
  reported that the canary could not score a request.
* latency (watch and canary): p99 request latency more than ``watch_latency_ratio`` x the previous model's and
  above ``watch_latency_floor_ms``, once each has ``watch_latency_min_requests`` timed requests (a single
  slow request, however many rows it carried, is not a spike); labels are not needed.
"""

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from retrain_assets.metrics import compute_metrics


@dataclass(frozen=True)
class Verdict:
    worse: bool  # watch: roll back; shadow: reject
    judged: bool  # False: not enough evidence yet
    message: str
    new: dict = field(default_factory=dict)
    old: dict = field(default_factory=dict)


def compare_quality(new_pred, new_true, old_pred, old_true, task: str, settings, *, min_samples: int,
                    positive_label=1, new_name: str = "live", old_name: str = "before") -> Verdict:
    """``settings``: DeploymentSettings. The new side needs ``min_samples`` labeled predictions."""
    new_pred, new_true = np.asarray(new_pred), np.asarray(new_true)
    if len(new_pred) < min_samples:
        return Verdict(False, False, f"{len(new_pred)} labeled {new_name} predictions so far; judging at {min_samples}")
    new = compute_metrics(new_true, new_pred, task, positive_label)
    old = compute_metrics(np.asarray(old_true), np.asarray(old_pred), task, positive_label) if len(old_pred) else {}
    if task == "classification":
        if "f1" not in old:
            return Verdict(False, True, f"no F1 of the {old_name} model to compare with", new, old)
        drop = old["f1"] - new["f1"]
        return Verdict(drop > settings.watch_f1_drop, True,
                       f"{new_name} F1 {new['f1']:.4f} vs {old['f1']:.4f} {old_name} (drop {drop:+.4f}; limit "
                       f"{settings.watch_f1_drop})", new, old)
    if "mae" not in old or old["mae"] <= 0:
        return Verdict(False, True, f"no MAE of the {old_name} model to compare with", new, old)
    growth = new["mae"] / old["mae"] - 1
    return Verdict(growth > settings.watch_mae_increase, True,
                   f"{new_name} MAE {new['mae']:.4g} vs {old['mae']:.4g} {old_name} ({growth:+.1%}; limit "
                   f"+{settings.watch_mae_increase:.0%})", new, old)


def compare_latency(live_ms, before_ms, settings) -> Verdict:
    """p99 request latency of the new model against the previous one's (both as served, one value per request)."""
    live_ms, before_ms = np.asarray(live_ms, dtype=float), np.asarray(before_ms, dtype=float)
    need = settings.watch_latency_min_requests
    if len(live_ms) < need or len(before_ms) < need:
        return Verdict(False, False, f"latency: {len(live_ms)} live / {len(before_ms)} previous timed requests; judging at {need}")
    live, before = float(np.quantile(live_ms, 0.99)), float(np.quantile(before_ms, 0.99))
    ratio = live / before if before > 0 else float("inf")
    spike = ratio > settings.watch_latency_ratio and live > settings.watch_latency_floor_ms
    return Verdict(spike, True, f"p99 latency {live:.1f} ms vs {before:.1f} ms before (x{ratio:.2f}; limit "
                                f"x{settings.watch_latency_ratio:g} above {settings.watch_latency_floor_ms:g} ms)",
                   {"p99_latency_ms": live}, {"p99_latency_ms": before})


PHASES = ("watch", "close_watch", "validation", "proven")


def deployment_phase(promoted_at: dt.datetime, proven_at: dt.datetime | None, now: dt.datetime,
                     settings) -> tuple[str, dt.datetime | None]:
    """Where a promoted model stands and until when (``settings``: DeploymentSettings): the watch (relative
    and absolute criteria, ``watch_minutes``), the close watch (absolute criteria, until
    ``close_watch_hours``), the validation period (until ``validation_days``; no automatic rollback), then
    proven. Seed 002's phases, with seed 004's 30-minute watch first."""
    if proven_at is not None:
        return "proven", None
    ends = {"watch": promoted_at + dt.timedelta(minutes=settings.watch_minutes),
            "close_watch": promoted_at + dt.timedelta(hours=settings.close_watch_hours),
            "validation": promoted_at + dt.timedelta(days=settings.validation_days)}
    for phase in ("watch", "close_watch", "validation"):
        if now < ends[phase]:
            return phase, ends[phase]
    return "validation", ends["validation"]  # over: the watch sensor marks it proven


def absolute_verdict(live_pred, live_true, task: str, settings, positive_label=1, live_latency_ms=(),
                     requests: tuple[int, int] | None = None) -> Verdict:
    """Seed 002's rollback criteria, against fixed limits rather than the previous model: live accuracy
    below ``rollback_min_accuracy`` (classification), p99 request latency above ``rollback_max_latency_ms``
    and, with ``requests`` = (answered, failed) counts, a share of failed requests above
    ``rollback_max_error_rate``; each judged once it has its evidence (``watch_min_samples`` labeled
    predictions, ``watch_latency_min_requests`` timed or counted requests)."""
    failures, parts, judged, values = [], [], [], {}
    live_pred, live_true = np.asarray(live_pred), np.asarray(live_true)
    if task == "classification" and settings.rollback_min_accuracy is not None:
        if len(live_pred) >= settings.watch_min_samples:
            accuracy = compute_metrics(live_true, live_pred, task, positive_label)["accuracy"]
            values["accuracy"] = accuracy
            judged.append(True)
            parts.append(f"live accuracy {accuracy:.4f} (floor {settings.rollback_min_accuracy})")
            if accuracy < settings.rollback_min_accuracy:
                failures.append(f"live accuracy {accuracy:.4f} < {settings.rollback_min_accuracy}")
        else:
            judged.append(False)
            parts.append(f"accuracy: {len(live_pred)} labeled predictions; judging at {settings.watch_min_samples}")
    latencies = np.asarray(live_latency_ms, dtype=float)
    if settings.rollback_max_latency_ms is not None:
        if len(latencies) >= settings.watch_latency_min_requests:
            p99 = float(np.quantile(latencies, 0.99))
            values["p99_latency_ms"] = p99
            judged.append(True)
            parts.append(f"p99 latency {p99:.1f} ms (ceiling {settings.rollback_max_latency_ms:g} ms)")
            if p99 > settings.rollback_max_latency_ms:
                failures.append(f"live p99 latency {p99:.1f} ms > {settings.rollback_max_latency_ms:g} ms")
        else:
            judged.append(False)
            parts.append(f"latency: {len(latencies)} timed requests; judging at {settings.watch_latency_min_requests}")
    if settings.rollback_max_error_rate is not None and requests is not None:
        answered, failed = requests
        if answered + failed >= settings.watch_latency_min_requests:
            rate = failed / (answered + failed)
            values["error_rate"] = rate
            parts.append(f"error rate {rate:.2%} of {answered + failed} requests (limit {settings.rollback_max_error_rate:.0%})")
            if rate > settings.rollback_max_error_rate:
                failures.append(f"{failed} of {answered + failed} requests failed ({rate:.2%} > "
                                f"{settings.rollback_max_error_rate:.0%})")
    if failures:
        return Verdict(True, True, "; ".join(failures), values)
    return Verdict(False, all(judged), "; ".join(parts) or "no absolute criteria set", values)


def post_deploy_verdict(live_pred, live_true, before_pred, before_true, task: str, settings, positive_label=1,
                        live_latency_ms=(), before_latency_ms=(), requests: tuple[int, int] | None = None) -> Verdict:
    """The watch: roll back on a quality drop or a latency spike against the previous model, or on an
    absolute criterion; judged once each has enough evidence."""
    quality = compare_quality(live_pred, live_true, before_pred, before_true, task, settings,
                              min_samples=settings.watch_min_samples, positive_label=positive_label)
    latency = compare_latency(live_latency_ms, before_latency_ms, settings)
    absolute = absolute_verdict(live_pred, live_true, task, settings, positive_label, live_latency_ms, requests)
    return _combined(quality, latency, absolute, judged=quality.judged and latency.judged)


def _combined(quality: Verdict, latency: Verdict, absolute: Verdict, *, judged: bool) -> Verdict:
    verdicts = (quality, latency, absolute)
    worse = [v for v in verdicts if v.worse]
    message = "; ".join(v.message for v in (worse or verdicts))
    return Verdict(bool(worse), bool(worse) or judged, message,
                   {**quality.new, **latency.new, **absolute.new}, {**quality.old, **latency.old})


def shadow_verdict(shadow_pred, production_pred, true, task: str, settings, positive_label=1) -> Verdict:
    """The candidate in shadow against production on the same labeled requests."""
    return compare_quality(shadow_pred, true, production_pred, true, task, settings,
                           min_samples=settings.shadow_min_samples, positive_label=positive_label,
                           new_name="shadow", old_name="production")


def canary_verdict(canary_pred, canary_true, production_pred, production_true, task: str, settings, positive_label=1,
                   canary_latency_ms=(), production_latency_ms=(), failures: int = 0) -> Verdict:
    """One canary step: the watch's criteria, the canary against production on the requests each answered
    since the step began. Judged once the canary and production each have ``watch_min_samples`` labeled
    requests (a latency spike or an absolute failure counts as soon as it shows; latency alone never holds a
    step). A canary
    that failed to score any request is worse whatever its metrics."""
    if failures:
        return Verdict(True, True, f"the canary failed to score {failures} request(s) (production answered them)")
    if len(production_pred) < settings.watch_min_samples:  # both sides need the evidence, not only the canary
        production_pred, production_true = (), ()
    quality = compare_quality(canary_pred, canary_true, production_pred, production_true, task, settings,
                              min_samples=settings.watch_min_samples, positive_label=positive_label,
                              new_name="canary", old_name="production")
    latency = compare_latency(canary_latency_ms, production_latency_ms, settings)
    absolute = absolute_verdict(canary_pred, canary_true, task, settings, positive_label, canary_latency_ms)
    return _combined(quality, latency, absolute, judged=quality.judged and bool(quality.old))
