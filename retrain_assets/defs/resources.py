"""Dagster resources: the only way assets, checks and sensors reach storage.

Kept free of ``from __future__ import annotations``: postponed annotations break Dagster's
ConfigurableResource field parsing.
"""

import dagster as dg

from retrain_assets.datasource import DataSource, open_data_source
from retrain_assets.settings import ModelSettings
from retrain_assets.store import ArtifactStore, MonitoringStore


class MonitoringStoreResource(dg.ConfigurableResource):
    """The monitoring database (prediction log, labels, registry, events)."""

    database_url: str

    def get(self) -> MonitoringStore:
        # Engines are cached per URL (store.database.open_engine), so this is cheap to call per step.
        return MonitoringStore(self.database_url)


class ArtifactStoreResource(dg.ConfigurableResource):
    """Content-addressed artifacts (models, datasets, drift profiles)."""

    root: str

    def get(self) -> ArtifactStore:
        return ArtifactStore(self.root)


class DataSourceResource(dg.ConfigurableResource):
    """Each model's labeled rows and recent inputs, from the source its ``data_source`` block declares
    (default: the monitoring database's prediction log; see docs/data-sources.md)."""

    database_url: str

    def for_model(self, model: ModelSettings) -> DataSource:
        return open_data_source(model, self.database_url)
