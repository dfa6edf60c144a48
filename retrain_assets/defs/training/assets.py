"""Per-model training assets: training_dataset -> candidate_model -> production_model.

The assets are thin: they fetch inputs through resources, call the pure core in
:mod:`retrain_assets.training`, persist results in the registry/artifact store, and report what a person
needs in the UI as metadata. Quality checks on the dataset and evaluation gates on the candidate are
*blocking* asset checks, so a failing one stops the run before anything downstream (training, promotion)
executes: production stays on the last good model. Each step reads on its own: the dataset in
:mod:`.dataset`, the candidate and its gates in :mod:`.candidate`, the promotion in
:mod:`retrain_assets.defs.deployment.production`.
"""

from retrain_assets.defs.deployment.production import build_production_model
from retrain_assets.defs.training.candidate import build_candidate_model, build_evaluation_gates
from retrain_assets.defs.training.dataset import build_data_quality, build_training_dataset
from retrain_assets.config.serving import ServingSettings
from retrain_assets.settings import ModelSettings


def build_training_assets(model: ModelSettings, serving: ServingSettings | None = None) -> list:
    """The model's retrain chain: dataset and its checks, candidate and its gates, production (whose
    serving smoke test validates requests with the servers' ``serving`` limits)."""
    return [build_training_dataset(model), build_data_quality(model), build_candidate_model(model),
            build_evaluation_gates(model), build_production_model(model, serving or ServingSettings())]
