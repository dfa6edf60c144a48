"""The data-source interface: where one model's labeled history and recent inputs come from.

Everything the product reads about a model's data goes through these four methods: the training dataset
(:meth:`DataSource.labeled_rows`), the drift report (:meth:`DataSource.recent_inputs`), the label counts of
the decision and the guards (:meth:`DataSource.count_labels_after`), and the dataset's recorded lineage
(:meth:`DataSource.describe`). A team whose data lives elsewhere implements them once; nothing else in
the product changes. The realized-performance evidence reads the rows labeled since the production
model's dataset (:meth:`DataSource.labeled_rows_after`, derived from ``labeled_rows`` unless a source
reads them more cheaply) and scores them with the production model itself, so it works for every source.
(The post-deploy watch and shadow evaluation judge what ``retrain serve`` served, per model version, in the
monitoring store.)
"""

import abc

import pandas as pd

from retrain_assets.settings import ModelSettings

TIMESTAMP = "timestamp"
REQUEST_ID = "request_id"
LABEL_ID = "label_id"


class DataSource(abc.ABC):
    """One model's data. Subclasses take the model's settings first (``__init__(self, model, **params)``)."""

    def __init__(self, model: ModelSettings):
        self.model = model

    @abc.abstractmethod
    def labeled_rows(self) -> pd.DataFrame:
        """Every labeled row, one per prediction request: the model's features, its target, ``timestamp``
        (UTC), ``request_id`` (unique per row) and ``label_id``, an integer that grows as labels arrive
        (the watermark from which new labels are counted). Optional: ``safe_to_send`` (False drops the
        row from training)."""

    @abc.abstractmethod
    def recent_inputs(self, rows: int, hours: float | None = None) -> pd.DataFrame:
        """The newest inputs the model received, labeled or not (at most ``rows``; with ``hours``, only
        that recent): the model's features and ``timestamp``, oldest first."""

    @abc.abstractmethod
    def count_labels_after(self, label_id: int | None, cap: int | None = None) -> int:
        """Labeled rows whose ``label_id`` is above ``label_id`` (all when None), counted up to ``cap``:
        sensors ask "at least N?" every minute, so stop counting there."""

    def counted_labels_after(self, label_id: int | None, cap: int | None = None) -> int:
        """:meth:`count_labels_after`, remembered for the life of this source object (one sensor evaluation,
        one monitoring run): the sensor refreshes the label signal and the guards then ask again after the
        same label, usually with a smaller cap. A count capped at a larger cap answers it,
        ``min(min(n, big), small) == min(n, small)``, so the rows are counted once."""
        memo = self.__dict__.setdefault("_label_counts", {})
        for (after, counted_cap), count in memo.items():
            if after == label_id and (counted_cap is None or (cap is not None and counted_cap >= cap)):
                return count if cap is None else min(count, cap)
        memo[(label_id, cap)] = count = self.count_labels_after(label_id, cap=cap)
        return count

    def labeled_rows_after(self, label_id: int | None, limit: int) -> pd.DataFrame:
        """Labeled rows whose ``label_id`` is above ``label_id`` (all when None), at most the newest
        ``limit`` by arrival, in the order their labels arrived (``label_id`` ascending). The default reads
        :meth:`labeled_rows` and filters; override it when your source can filter where the data lives."""
        rows = self.labeled_rows()
        if label_id is not None:
            rows = rows[rows[LABEL_ID] > label_id]
        return rows.sort_values(LABEL_ID, kind="stable").tail(limit).reset_index(drop=True)

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the rows come from (a query, a table name), stored with each dataset version."""
