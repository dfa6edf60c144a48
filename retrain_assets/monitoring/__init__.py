"""Pure monitoring core: drift statistics, mergeable profiles, realized and estimated performance, the decision.

No Dagster imports: the monitoring assets, the trigger sensor, the ``retrain check`` command and the replay
harness all call these same functions. See docs/drift.md for every statistic and rule.
"""

from retrain_assets.monitoring.dataset_drift import DriftReport, detect_drift
from retrain_assets.monitoring.decision import Decision, Evidence, Outcomes, SignalEvidence, decide
from retrain_assets.monitoring.degradation import (
    ConceptDrift,
    PerformanceReport,
    concept_drift,
    per_row_losses,
    performance_degradation,
)
from retrain_assets.monitoring.evidence import gather_evidence
from retrain_assets.monitoring.feature_tests import FeatureDrift
from retrain_assets.monitoring.profiles import ReferenceProfile, WindowProfile
from retrain_assets.monitoring.reference_pack import ReferencePack, build_reference_pack

__all__ = [
    "ConceptDrift",
    "Decision",
    "DriftReport",
    "Evidence",
    "FeatureDrift",
    "Outcomes",
    "PerformanceReport",
    "ReferencePack",
    "ReferenceProfile",
    "SignalEvidence",
    "WindowProfile",
    "build_reference_pack",
    "concept_drift",
    "decide",
    "detect_drift",
    "gather_evidence",
    "per_row_losses",
    "performance_degradation",
]
