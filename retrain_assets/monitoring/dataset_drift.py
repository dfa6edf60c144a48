"""The dataset verdict: per-feature tests, Benjamini-Hochberg across features, effect-size floors.

Why floors: on large samples a p-value flags shifts nobody cares about (a 0.02-sigma shift on 200k rows
has p ~ 1e-6). A feature therefore counts as drifted only when its test is significant after the BH
correction *and* its effect is material: KS D >= ``min_ks_effect``, or normalized Wasserstein >=
``min_wasserstein_effect``, or PSI >= ``min_psi_effect`` (categorical: PSI only). The dataset has drifted
when the share of drifted features reaches ``drift_share`` or the mean PSI exceeds ``psi_aggregate``;
with fewer than ``min_samples`` current rows the statistics are reported but no dataset verdict is given.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from retrain_assets.errors import DataError
from retrain_assets.monitoring.feature_tests import FeatureDrift, categorical_drift, numeric_drift
from retrain_assets.monitoring.profiles import ReferenceProfile, WindowProfile
from retrain_assets.config.monitoring import DriftSettings

TABLE_COLUMNS = ("feature", "type", "test", "statistic", "p_value", "p_adjusted", "psi", "js", "kl",
                 "wasserstein", "outlier_share", "drifted", "note")


@dataclass
class DriftReport:
    features: dict[str, FeatureDrift]
    drifted_features: list[str]
    drift_share: float
    aggregate_psi: float
    dataset_drift: bool
    reference_rows: int
    current_rows: int
    settings: DriftSettings = field(default_factory=DriftSettings)
    insufficient_data: bool = False  # fewer current rows than min_samples: statistics shown, no verdict

    @property
    def skipped(self) -> dict[str, str]:
        return {name: "; ".join(f.notes) for name, f in self.features.items() if f.skipped}

    @property
    def max_kl(self) -> float:
        values = [f.kl for f in self.features.values() if f.kl is not None]
        return max(values) if values else 0.0

    def feature_table(self) -> pd.DataFrame:
        rows = []
        for f in self.features.values():
            rows.append({
                "feature": f.feature, "type": f.kind, "test": f.test, "statistic": f.statistic,
                "p_value": f.p_value, "p_adjusted": f.p_adjusted, "psi": f.psi, "js": f.js, "kl": f.kl,
                "wasserstein": f.wasserstein, "outlier_share": f.outlier_share,
                "drifted": "YES" if f.drifted else "no", "note": "; ".join(f.notes),
            })
        return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))

    def feature_markdown(self) -> str:
        """The feature table as GitHub markdown (for Dagster metadata and the CLI)."""
        table = self.feature_table()

        def cell(value) -> str:
            if value is None or (isinstance(value, float) and not np.isfinite(value)):
                return "-"
            if isinstance(value, float):
                return f"{value:.4g}"
            return str(value).replace("|", "/")

        lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "dataset_drift": self.dataset_drift,
            "drifted_features": self.drifted_features,
            "drift_share": self.drift_share,
            "aggregate_psi": self.aggregate_psi,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "insufficient_data": self.insufficient_data,
            "skipped": self.skipped,
            "features": {name: f.to_dict() for name, f in self.features.items()},
        }


def _effect(result: FeatureDrift, settings: DriftSettings) -> tuple[str, float, bool]:
    """The effect measure that decides materiality, its value, and whether it passes its floor."""
    if result.kind == "categorical":
        return "psi", result.psi or 0.0, (result.psi or 0.0) >= settings.min_psi_effect
    candidates = [
        ("ks_d", result.statistic or 0.0, settings.min_ks_effect),
        ("wasserstein", result.wasserstein or 0.0, settings.min_wasserstein_effect),
        ("psi", result.psi or 0.0, settings.min_psi_effect),
    ]
    # report the measure furthest past (or closest to) its floor
    name, value, floor = max(candidates, key=lambda c: c[1] / c[2] if c[2] > 0 else np.inf)
    return name, value, value >= floor


def verdicts(results: list[FeatureDrift], settings: DriftSettings) -> None:
    """BH-adjust the p-values across features and set each feature's verdict in place."""
    tested = [r for r in results if not r.skipped and r.p_value is not None]
    if tested:
        pvalues = np.array([r.p_value for r in tested], dtype=float)
        adjusted = stats.false_discovery_control(pvalues, method="bh") if settings.bh_correction and len(tested) > 1 else pvalues
        for result, p in zip(tested, adjusted):
            result.p_adjusted = float(p)
    for result in tested:
        alpha = settings.ks_p_value if result.kind == "numeric" else settings.chi2_p_value
        result.significant = bool(result.p_adjusted < alpha)
        result.effect_name, result.effect, material = _effect(result, settings)
        result.drifted = result.significant and material
        if result.significant and not material:
            result.notes.append(f"significant but immaterial ({result.effect_name} {result.effect:.3g} below its floor)")


def detect_drift(
    reference: ReferenceProfile | pd.DataFrame,
    current: pd.DataFrame | WindowProfile,
    settings: DriftSettings | None = None,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
) -> DriftReport:
    """Compare ``current`` with ``reference`` feature by feature and give the dataset verdict.

    ``reference`` may be raw rows (profiled here) or a stored profile; ``current`` raw rows or a (merged)
    window profile built against that reference.
    """
    settings = settings or DriftSettings()
    if isinstance(reference, pd.DataFrame):
        reference = ReferenceProfile.from_frame(reference, numeric, categorical, settings)
    elif numeric is not None or categorical is not None:
        wanted = set(numeric or []) | set(categorical or [])
        unknown = sorted(wanted - set(reference.columns))
        if unknown:
            raise DataError(f"the reference profile has no columns {unknown}: rebuild it from the current feature list")
    if isinstance(current, pd.DataFrame):
        if current.empty:
            raise DataError("the current window is empty: there is nothing to compare with the reference")
        window = WindowProfile.from_frame(current, reference)
    else:
        window = current
    results = []
    for name, ref in reference.numeric.items():
        results.append(numeric_drift(name, ref, window.numeric[name], settings.outlier_fraction))
    for name, counts in reference.categorical.items():
        results.append(categorical_drift(name, counts, window.categorical[name], reference.max_categories))
    verdicts(results, settings)
    tested = [r for r in results if not r.skipped]
    drifted = [r.feature for r in tested if r.drifted]
    psis = [r.psi for r in tested if r.psi is not None]
    aggregate = float(np.mean(psis)) if psis else 0.0
    share = len(drifted) / len(tested) if tested else 0.0
    insufficient = window.rows < settings.min_samples
    return DriftReport(
        features={r.feature: r for r in results},
        drifted_features=drifted,
        drift_share=share,
        aggregate_psi=aggregate,
        dataset_drift=bool(tested) and not insufficient and (
            share >= settings.drift_share or aggregate > settings.psi_aggregate
        ),
        reference_rows=reference.rows,
        current_rows=window.rows,
        settings=settings,
        insufficient_data=insufficient,
    )
