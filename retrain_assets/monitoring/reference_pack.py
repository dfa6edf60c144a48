"""The reference pack: what every later retrain decision about a model needs, computed once when it is trained.

A decision asks "is this model worse than it was, by more than chance?". Each answer needs a yardstick
from the model's own data, so the candidate run computes them all, on the rows the model never trained on
(its held-out test rows) or on its training window, and stores them with the model version:

* **held-out loss** (:class:`~retrain_assets.monitoring.sequential.LossReference`): mean, variance and row
  count of the per-row loss on the test rows, for the realized-performance tests;
* **importances**: permutation importance of each feature on the test rows (the loss the model suffers
  when the feature's values are shuffled), normalized to weights that sum to 1: a feature the model does
  not use can drift without mattering;
* **drift calibration**: the importance-weighted PSI of batch-sized chunks of the training window, each
  chunk against the rest. Its maximum is the drift a window can show *without* anything having changed
  for this model, so a fixed PSI cut-off is replaced by the data's own variability;
* **CBPE reference** (:class:`~retrain_assets.monitoring.cbpe.CbpeReference`): the confidence-to-accuracy
  map and the expected accuracy on the test rows (classifiers with probabilities only).

A model trained before packs existed has none: the decision then says which evidence is unavailable and
decides on the rest.
"""

import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from retrain_assets.metrics import positive_scores
from retrain_assets.monitoring.cbpe import CbpeReference
from retrain_assets.monitoring.degradation import per_row_losses
from retrain_assets.monitoring.feature_tests import pooled_levels, psi
from retrain_assets.monitoring.prediction_drift import PredictionReference
from retrain_assets.monitoring.profiles import ReferenceProfile, category_counts
from retrain_assets.monitoring.sequential import LossReference

PACK_FORMAT = 1
IMPORTANCE_MAX_ROWS = 5_000  # permutation importance on at most this many test rows (cost bound)
IMPORTANCE_REPEATS = 5


@dataclass(frozen=True)
class DriftCalibration:
    """The importance-weighted PSI of chunks of the training window, each against the rest, and what the
    sampling noise of PSI alone would give.

    Two things make a window look drifted without anything having changed for the model: the training
    data's own variability over time (the chunks measure it) and the sampling noise of a finite window.
    For the second, PSI between two samples of one distribution is about ``chi2(k) / n_eff`` (k: bins or
    levels minus one; ``n_eff = n m / (n + m)``), so the importance-weighted sum has a known noise
    distribution (a scaled chi-square by Satterthwaite's approximation, features taken as independent).
    The threshold a window must exceed is the larger of the two.
    """

    threshold: float  # the largest chunk score: drift the model's own data shows as normal
    chunk_rows: int
    window_rows: int
    scores: list[float] = field(default_factory=list)
    degrees: dict[str, int] = field(default_factory=dict)  # per feature: PSI bins (or levels) - 1
    reference_rows: int = 0  # rows of the profile a window is compared with

    def threshold_for(self, rows: int, weights: dict[str, float], alpha: float) -> float:
        """The threshold for a window of ``rows``: the calibrated maximum (scaled up like PSI's sampling
        noise when the window is smaller than the chunks), or the ``1 - alpha`` quantile of that noise."""
        calibrated = self.threshold
        if 0 < rows < self.chunk_rows:
            rest = max(self.window_rows - self.chunk_rows, 1)
            calibrated *= (1 / rows + 1 / max(self.window_rows, 1)) / (1 / self.chunk_rows + 1 / rest)
        return max(calibrated, self.noise_quantile(rows, weights, alpha))

    def noise_quantile(self, rows: int, weights: dict[str, float], alpha: float) -> float:
        from scipy import stats

        if rows <= 0 or not self.degrees:
            return 0.0
        n_eff = rows * self.reference_rows / (rows + self.reference_rows) if self.reference_rows else rows
        used = {f: w for f, w in weights.items() if f in self.degrees and w > 0}
        total = sum(used.values()) or 1.0
        mean = sum(w / total * self.degrees[f] for f, w in used.items()) / n_eff
        var = sum((w / total) ** 2 * 2 * self.degrees[f] for f, w in used.items()) / n_eff ** 2
        if mean <= 0 or var <= 0:
            return 0.0
        scale, dof = var / (2 * mean), 2 * mean ** 2 / var
        return float(scale * stats.chi2.isf(alpha, dof))


@dataclass(frozen=True)
class ReferencePack:
    task: str
    loss: LossReference | None  # None: no held-out losses (retrain check without a baseline)
    importances: dict[str, float]
    drift: DriftCalibration | None
    cbpe: CbpeReference | None
    format: int = PACK_FORMAT
    predictions: PredictionReference | None = None  # its outputs on the held-out rows (packs since format 1.1)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ReferencePack":
        raw = json.loads(text)
        return cls(
            task=raw["task"],
            loss=LossReference(**raw["loss"]) if raw.get("loss") else None,
            importances={k: float(v) for k, v in raw["importances"].items()},
            drift=DriftCalibration(**raw["drift"]) if raw.get("drift") else None,
            cbpe=CbpeReference(**raw["cbpe"]) if raw.get("cbpe") else None,
            format=raw.get("format", PACK_FORMAT),
            predictions=PredictionReference(**raw["predictions"]) if raw.get("predictions") else None,
        )


def importance_weights(pipeline, test: pd.DataFrame, model, seed: int = 0) -> dict[str, float]:
    """Permutation importance of each feature on the test rows, as weights summing to 1.

    A feature weighs its importance's lower confidence bound (mean minus two standard errors over the
    repeats): one whose importance cannot be told from zero weighs nothing, since noise in a few hundred
    test rows would otherwise give every unused feature a little weight. When no feature matters
    measurably, every feature weighs the same.
    """
    from sklearn.inspection import permutation_importance

    features = model.feature_names
    if len(test) < 2:
        return {f: 1.0 / len(features) for f in features}
    scoring = "neg_mean_absolute_error" if model.task == "regression" else "accuracy"
    result = permutation_importance(
        pipeline, test[features], test[model.target], scoring=scoring, n_repeats=IMPORTANCE_REPEATS,
        random_state=seed, max_samples=min(1.0, IMPORTANCE_MAX_ROWS / len(test)), n_jobs=1,
    )
    lower = result.importances_mean - 2 * result.importances_std / np.sqrt(IMPORTANCE_REPEATS)
    raw = np.clip(np.nan_to_num(lower, nan=0.0), 0.0, None)
    if raw.sum() <= 0:
        raw = np.ones(len(features))
    return {f: float(w) for f, w in zip(features, raw / raw.sum())}


def feature_psis(profile: ReferenceProfile, reference: dict, current: dict) -> dict[str, float]:
    """PSI of each feature between two sides counted in ``profile``'s PSI bins (numeric: arrays of PSI-bin
    counts; categorical: level -> count), exactly as the drift report computes it."""
    out = {}
    for name in profile.numeric:
        out[name] = psi(reference[name], current[name])
    for name in profile.categorical:
        ref, cur, _, _ = pooled_levels(reference[name], current[name], profile.max_categories)
        out[name] = psi(ref, cur)
    return out


def weighted_drift(psis: dict[str, float], weights: dict[str, float]) -> float:
    """Importance-weighted PSI over the features with a PSI (weights renormalized over them)."""
    present = {f: w for f, w in weights.items() if psis.get(f) is not None and np.isfinite(psis[f])}
    total = sum(present.values())
    if total <= 0:
        present = {f: 1.0 for f in psis if psis[f] is not None and np.isfinite(psis[f])}
        total = float(len(present)) or 1.0
    return float(sum(w * psis[f] for f, w in present.items()) / total)


def retrain_window_drift(profile: ReferenceProfile, new_rows: pd.DataFrame, share: float,
                         weights: dict[str, float]) -> float:
    """The importance-weighted PSI, against ``profile``, of the window a retrain would train on now: the
    rows labeled since the model's training (``new_rows``) make up ``share`` of it, the rest is distributed
    like the model's own training rows (what the profile counted).

    Drift in the served inputs says the model *may* be stale; a retrain can only learn the change if its
    training window holds it. While the drifted rows are unlabeled, or too few to move a long window, the
    candidate would be trained on what production was trained on. Computed from the profile's counts
    alone: the old rows are never read again.
    """
    def only(names) -> ReferenceProfile:
        return replace(profile, numeric={n: r for n, r in profile.numeric.items() if n in names},
                       categorical={n: c for n, c in profile.categorical.items() if n in names})

    share = float(min(max(share, 0.0), 1.0))
    profile = only(set(new_rows.columns))  # a column the configuration no longer has is left out
    codes = _psi_bin_codes(profile, new_rows)
    reference, mixed = {}, {}
    for name, ref in profile.numeric.items():
        counts = ref.psi_counts(ref.counts).astype(float)
        code = codes[name]
        new = np.bincount(code[code >= 0], minlength=profile.psi_bins).astype(float)
        if counts.sum() <= 0 or new.sum() <= 0:
            continue
        reference[name] = counts
        mixed[name] = share * new / new.sum() + (1.0 - share) * counts / counts.sum()
    for name, levels in profile.categorical.items():
        new = category_counts(codes[name])
        new_total, ref_total = sum(new.values()), sum(levels.values())
        if new_total <= 0 or ref_total <= 0:
            continue
        reference[name] = {k: v / ref_total for k, v in levels.items()}
        mixed[name] = {k: share * new.get(k, 0) / new_total + (1.0 - share) * levels.get(k, 0) / ref_total
                       for k in set(levels) | set(new)}
    return weighted_drift(feature_psis(only(set(reference)), reference, mixed), weights)


def _psi_bin_codes(profile: ReferenceProfile, window: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per numeric feature, each row's PSI bin (-1 for missing or infinite values); per categorical feature,
    each row's level code into a list of levels (kept in ``_levels``)."""
    codes = {}
    for name, ref in profile.numeric.items():
        values = pd.to_numeric(window[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        code = np.searchsorted(ref.psi_edges, values, side="left")
        code[~np.isfinite(values)] = -1
        codes[name] = code
    for name in profile.categorical:
        codes[name] = window[name]
    return codes


def calibrate_drift(profile: ReferenceProfile, window: pd.DataFrame, weights: dict[str, float], chunk_rows: int,
                    min_chunks: int = 4) -> DriftCalibration | None:
    """The importance-weighted PSI of each chunk of ``window`` (time order) against the rest of it.

    Chunks are ``chunk_rows`` long (the monitored window's size), at most ``len(window) / min_chunks``,
    and overlap by half, so a short window still gives ``2 * min_chunks - 1`` of them. None when the
    window is too short to cut (fewer than ``2 * min_chunks`` rows).
    """
    rows = len(window)
    size = min(int(chunk_rows), rows // min_chunks)
    if size < 2:
        return None
    codes = _psi_bin_codes(profile, window)
    bins = profile.psi_bins
    whole_numeric = {n: np.bincount(c[c >= 0], minlength=bins).astype(float) for n, c in codes.items() if n in profile.numeric}
    whole_categorical = {n: category_counts(codes[n]) for n in profile.categorical}
    scores = []
    step = max(size // 2, 1)
    for start in range(0, rows - size + 1, step):
        chunk, rest = {}, {}
        for name in profile.numeric:
            part = codes[name][start:start + size]
            chunk[name] = np.bincount(part[part >= 0], minlength=bins).astype(float)
            rest[name] = whole_numeric[name] - chunk[name]
        for name in profile.categorical:
            chunk[name] = category_counts(codes[name].iloc[start:start + size])
            rest[name] = {k: v - chunk[name].get(k, 0) for k, v in whole_categorical[name].items()}
        scores.append(weighted_drift(feature_psis(profile, rest, chunk), weights))
    degrees = {name: profile.psi_bins - 1 for name in profile.numeric}
    degrees.update({name: max(len(levels) - 1, 1) for name, levels in profile.categorical.items()})
    return DriftCalibration(float(max(scores)), size, rows, [round(s, 6) for s in scores], degrees, profile.rows)


def build_reference_pack(pipeline, model, window: pd.DataFrame, test: pd.DataFrame, profile: ReferenceProfile,
                         settings=None, seed: int = 0) -> ReferencePack:
    """Everything the evidence policy needs about a freshly trained ``pipeline``.

    ``window``: the whole training window (every split) in time order; ``test``: its held-out rows;
    ``profile``: the drift reference built from its training rows; ``settings``: the model's
    DecisionSettings (calibration chunks) - the chunk size is ``model.monitoring.window_rows``.
    """
    min_chunks = settings.calibration_chunks if settings is not None else 4
    if "timestamp" in test.columns:  # held-out losses in time order: their dependence is measured along it
        test = test.sort_values("timestamp", kind="stable")
    features = test[model.feature_names]
    predictions = np.asarray(pipeline.predict(features))
    losses = per_row_losses(predictions, test[model.target].to_numpy(), model.task)
    weights = importance_weights(pipeline, test, model, seed)
    calibration = calibrate_drift(profile, window, weights, model.monitoring.window_rows, min_chunks)
    cbpe, scores = None, None
    if model.task == "classification" and hasattr(pipeline, "predict_proba"):
        scores = positive_scores(pipeline, features, model.positive_label)
        cbpe = CbpeReference.fit(scores, 1.0 - losses)
    # Its output as monitoring will see it: the positive-class score of a binary classifier, else the
    # predicted class or value.
    if scores is not None and np.ndim(scores) == 1:
        outputs = PredictionReference.fit(scores, "score")
    else:
        outputs = PredictionReference.fit(predictions, "value" if model.task == "regression" else "class")
    return ReferencePack(model.task, LossReference.of(losses), weights, calibration, cbpe, predictions=outputs)

