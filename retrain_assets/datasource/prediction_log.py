"""The default data source: the monitoring store's prediction log joined with its label feedback.

``retrain serve`` (or your own serving code, through ``MonitoringStore.predictions``) writes each request's
features to ``prediction_log``; labels arrive later in ``label_feedback``, joined on the request id.
"""

import pandas as pd

from retrain_assets.datasource.base import DataSource
from retrain_assets.settings import ModelSettings
from retrain_assets.store import MonitoringStore


class PredictionLogSource(DataSource):
    def __init__(self, model: ModelSettings, store: MonitoringStore):
        super().__init__(model)
        self.store = store

    def labeled_rows(self) -> pd.DataFrame:
        return self.store.predictions.labeled_rows(self.model.log_key, self.model.feature_names, self.model.target)

    def labeled_rows_after(self, label_id: int | None, limit: int) -> pd.DataFrame:
        rows = self.store.predictions.labeled_rows(self.model.log_key, self.model.feature_names, self.model.target,
                                                   after_label_id=label_id, newest_labels=limit)
        return rows.sort_values("label_id", kind="stable").reset_index(drop=True)

    def recent_inputs(self, rows: int, hours: float | None = None) -> pd.DataFrame:
        return self.store.predictions.recent_window(self.model.log_key, self.model.feature_names, rows=rows, hours=hours)

    def count_labels_after(self, label_id: int | None, cap: int | None = None) -> int:
        return self.store.predictions.count_labels_after(self.model.log_key, label_id, cap=cap)

    def describe(self) -> str:
        return (
            "prediction_log JOIN label_feedback USING (model_name, request_id) "
            f"WHERE model_name = '{self.model.log_key}'"
        )
