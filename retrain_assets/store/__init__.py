"""The monitoring store (prediction log, labels, registry, events) and the artifact store."""

from retrain_assets.store.artifacts import ArtifactRef, ArtifactStore
from retrain_assets.store.database import open_engine, redact
from retrain_assets.store.events import EventLog
from retrain_assets.store.history import MonitoringHistory
from retrain_assets.store.predictions import PredictionLog
from retrain_assets.store.registry import DatasetVersion, ModelVersion, Registry


class MonitoringStore:
    """One database, four views of it: what was served, what was trained, what was decided, what was measured."""

    def __init__(self, database_url: str):
        self.url = database_url
        self.engine = open_engine(database_url)
        self.predictions = PredictionLog(self.engine)
        self.registry = Registry(self.engine)
        self.events = EventLog(self.engine)
        self.history = MonitoringHistory(self.engine)

    def __repr__(self) -> str:
        return f"MonitoringStore({redact(self.url)!r})"


__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "DatasetVersion",
    "EventLog",
    "ModelVersion",
    "MonitoringHistory",
    "MonitoringStore",
    "PredictionLog",
    "Registry",
]
