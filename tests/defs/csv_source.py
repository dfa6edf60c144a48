"""A user's own data source, as docs/data-sources.md shows: labeled history in a CSV file.

Used by the tests through ``data_source: {kind: python, class_path: tests.defs.csv_source:CsvSource}``.
"""

import pandas as pd

from retrain_assets.datasource import DataSource


class CsvSource(DataSource):
    def __init__(self, model, path: str):
        super().__init__(model)
        self.path = path

    def _rows(self) -> pd.DataFrame:
        frame = pd.read_csv(self.path, parse_dates=["scored_at"])
        frame["timestamp"] = pd.to_datetime(frame.pop("scored_at"), utc=True)
        frame["label_id"] = frame["row_number"]
        frame["request_id"] = frame["row_number"].astype(str)
        return frame.sort_values("row_number")

    def labeled_rows(self) -> pd.DataFrame:
        return self._rows().dropna(subset=[self.model.target]).reset_index(drop=True)

    def recent_inputs(self, rows, hours=None):
        frame = self._rows()
        if hours is not None:
            frame = frame[frame["timestamp"] >= pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=hours)]
        return frame.tail(rows)[[*self.model.feature_names, "timestamp"]].reset_index(drop=True)

    def count_labels_after(self, label_id, cap=None):
        labeled = self._rows().dropna(subset=[self.model.target])
        count = int((labeled["label_id"] > (label_id if label_id is not None else -1)).sum())
        return count if cap is None else min(count, cap)

    def describe(self) -> str:
        return f"CSV file {self.path}"
