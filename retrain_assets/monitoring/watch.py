"""Live comparisons of two model versions: the post-deploy watch and the shadow decision.

Both ask one question, "does the new model do worse than the old one on live traffic?", with the same
tolerances (a candidate the watch would roll back must not be promoted out of shadow):

* quality: classification is worse when live F1 falls by more than ``watch_f1_drop``; regression when live
  MAE grows by more than ``watch_mae_increase`` (relative). The watch compares what each version served
  (the new one since its promotion, the previous one over its last window); the shadow decision compares
  the candidate and production on the *same* labeled requests, which removes traffic differences.
* latency (watch only): p99 request latency more than ``watch_latency_ratio`` x the previous model's and
  above ``watch_latency_floor_ms``, once each has ``watch_latency_min_requests`` timed requests (a single
  slow request, however many rows it carried, is not a spike); labels are not needed.
"""

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


def post_deploy_verdict(live_pred, live_true, before_pred, before_true, task: str, settings, positive_label=1,
                        live_latency_ms=(), before_latency_ms=()) -> Verdict:
    """Roll back on a quality drop or a latency spike; judged once both have enough evidence."""
    quality = compare_quality(live_pred, live_true, before_pred, before_true, task, settings,
                              min_samples=settings.watch_min_samples, positive_label=positive_label)
    latency = compare_latency(live_latency_ms, before_latency_ms, settings)
    message = f"{quality.message}; {latency.message}"
    return Verdict(quality.worse or latency.worse, (quality.judged and latency.judged) or quality.worse or latency.worse,
                   message, {**quality.new, **latency.new}, {**quality.old, **latency.old})


def shadow_verdict(shadow_pred, production_pred, true, task: str, settings, positive_label=1) -> Verdict:
    """The candidate in shadow against production on the same labeled requests."""
    return compare_quality(shadow_pred, true, production_pred, true, task, settings,
                           min_samples=settings.shadow_min_samples, positive_label=positive_label,
                           new_name="shadow", old_name="production")
