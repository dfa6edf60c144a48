"""Pure monitoring core: drift statistics, mergeable profiles, concept drift, performance, the decision.

No Dagster imports: the monitoring assets, the ``retrain check`` command and the replay harness all call
these same functions. See docs/drift.md for every statistic and rule.
"""

from retrain_assets.monitoring.dataset_drift import DriftReport, detect_drift
from retrain_assets.monitoring.degradation import (
    ConceptDrift,
    PerformanceReport,
    concept_drift,
    performance_degradation,
)
from retrain_assets.monitoring.feature_tests import FeatureDrift
from retrain_assets.monitoring.profiles import ReferenceProfile, WindowProfile
from retrain_assets.monitoring.retrain_decision import RetrainDecision, Severity, Signal, should_retrain

__all__ = [
    "ConceptDrift",
    "DriftReport",
    "FeatureDrift",
    "PerformanceReport",
    "ReferenceProfile",
    "RetrainDecision",
    "Severity",
    "Signal",
    "WindowProfile",
    "concept_drift",
    "detect_drift",
    "performance_degradation",
    "should_retrain",
]
