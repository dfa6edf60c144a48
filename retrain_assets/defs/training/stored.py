"""The stored training dataset: one Parquet artifact holding every split, with the columns the catalog
describes. The dataset, candidate and gate steps all read it back through these helpers, so a candidate is
always judged on the very rows its dataset version names."""

import numpy as np
import pandas as pd

from retrain_assets.errors import StoreError
from retrain_assets.settings import ModelSettings
from retrain_assets.training import DatasetSplit, reference_for

SPLIT_COLUMN = "__split"
WEIGHT_COLUMN = "__weight"


def column_roles(model: ModelSettings) -> dict[str, str]:
    """What each stored column is, for the dataset's column schema in the catalog."""
    roles = {name: "numeric feature" for name in model.numeric_features}
    roles |= {name: "categorical feature" for name in model.categorical_features}
    return roles | {model.target: "label (target)", "timestamp": "when the prediction was made",
                    "request_id": "the prediction's request id", WEIGHT_COLUMN: "training weight (recency)",
                    SPLIT_COLUMN: "train / validation / test"}


def split_frame(frame: pd.DataFrame) -> tuple[DatasetSplit, np.ndarray | None]:
    """The stored dataset back into its split, plus training weights (None when all rows weigh the same)."""
    parts = {
        name: frame[frame[SPLIT_COLUMN] == name].drop(columns=[SPLIT_COLUMN, WEIGHT_COLUMN])
        for name in ("train", "validation", "test")
    }
    weights = frame.loc[frame[SPLIT_COLUMN] != "test", WEIGHT_COLUMN].to_numpy()
    split = DatasetSplit(train=parts["train"], validation=parts["validation"], test=parts["test"])
    return split, None if np.allclose(weights, 1.0) else weights


def load_dataset(store, artifacts, model: ModelSettings, run_id: str | None):
    dataset = store.registry.latest_dataset(model.name, run_id=run_id)
    if dataset is None:
        raise StoreError(f"model {model.name} has no training dataset yet: materialize {model.name}/training_dataset first")
    return dataset, artifacts.load_frame(dataset.artifact_key, dataset.artifact_sha256)


def reference_of_production(store, artifacts, model: ModelSettings) -> dict | None:
    """Ranges, categories and classes of the production model's training data, for the quality checks."""
    production = store.registry.production(model.name)
    if production is None:
        return None
    dataset = store.registry.dataset(model.name, production.dataset_tag)
    frame = artifacts.load_frame(dataset.artifact_key, dataset.artifact_sha256)
    return reference_for(frame[frame[SPLIT_COLUMN] == "train"], model)
