"""Pure training core: datasets, data quality, tuning and training, metrics and evaluation gates.

No Dagster imports: the Dagster assets in ``retrain_assets.defs.training``, the replay harness and a
notebook all call these same functions.
"""

from retrain_assets.training.dataset import (
    DatasetSplit,
    clean_labeled_rows,
    content_hash,
    dataset_summary,
    select_window,
    split_dataset,
)
from retrain_assets.training.gates import GATE_NAMES, GateResult, evaluate_gates, gate_requirements
from retrain_assets.metrics import compute_metrics, score_model
from retrain_assets.training.pipeline import build_pipeline
from retrain_assets.training.quality import (
    QUALITY_CHECKS,
    QualityResult,
    quality_requirements,
    quality_status,
    reference_for,
    validate_training_data,
)
from retrain_assets.training.train import TrainedCandidate, train_candidate

__all__ = [
    "GATE_NAMES",
    "gate_requirements",
    "quality_requirements",
    "quality_status",
    "QUALITY_CHECKS",
    "DatasetSplit",
    "GateResult",
    "QualityResult",
    "TrainedCandidate",
    "build_pipeline",
    "clean_labeled_rows",
    "compute_metrics",
    "content_hash",
    "dataset_summary",
    "evaluate_gates",
    "reference_for",
    "score_model",
    "select_window",
    "split_dataset",
    "train_candidate",
    "validate_training_data",
]
