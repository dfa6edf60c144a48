"""The post-deploy watch: is the newly promoted model doing worse on live traffic than the one before?

Both are judged on what they actually served (labeled predictions): the new model since its promotion,
the previous one over its last window before it. Classification rolls back when live F1 falls by more than
``watch_f1_drop``; regression when live MAE grows by more than ``watch_mae_increase`` (relative).
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WatchVerdict:
    rollback: bool
    judged: bool  # False: not enough labeled predictions yet
    live: dict
    before: dict
    message: str


def post_deploy_verdict(live_pred, live_true, before_pred, before_true, task: str, settings, positive_label=1) -> WatchVerdict:
    """``settings``: DeploymentSettings."""
    from retrain_assets.training.metrics import compute_metrics

    live_pred, live_true = np.asarray(live_pred), np.asarray(live_true)
    if len(live_pred) < settings.watch_min_samples:
        return WatchVerdict(False, False, {}, {}, f"{len(live_pred)} labeled live predictions so far; judging at "
                                                   f"{settings.watch_min_samples}")
    live = compute_metrics(live_true, live_pred, task, positive_label)
    before = compute_metrics(np.asarray(before_true), np.asarray(before_pred), task, positive_label) if len(before_pred) else {}
    if task == "classification":
        if "f1" not in before:
            return WatchVerdict(False, True, live, before, "no live F1 of the previous model to compare with")
        drop = before["f1"] - live["f1"]
        rollback = drop > settings.watch_f1_drop
        message = f"live F1 {live['f1']:.4f} vs {before['f1']:.4f} before (drop {drop:+.4f}; limit {settings.watch_f1_drop})"
    else:
        if "mae" not in before or before["mae"] <= 0:
            return WatchVerdict(False, True, live, before, "no live MAE of the previous model to compare with")
        growth = live["mae"] / before["mae"] - 1
        rollback = growth > settings.watch_mae_increase
        message = f"live MAE {live['mae']:.4g} vs {before['mae']:.4g} before ({growth:+.1%}; limit +{settings.watch_mae_increase:.0%})"
    return WatchVerdict(rollback, True, live, before, message)
