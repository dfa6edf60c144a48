"""Data sources: the interface (:class:`DataSource`), the default (the prediction log), a table of
yours (:class:`SqlTableSource`), and :func:`open_data_source`, which picks one from a model's config."""

import importlib

from retrain_assets.datasource.base import LABEL_ID, REQUEST_ID, TIMESTAMP, DataSource
from retrain_assets.datasource.prediction_log import PredictionLogSource
from retrain_assets.datasource.sql_table import SqlTableSource
from retrain_assets.errors import ConfigError
from retrain_assets.settings import ModelSettings
from retrain_assets.store import MonitoringStore

__all__ = ["DataSource", "LABEL_ID", "PredictionLogSource", "REQUEST_ID", "SqlTableSource", "TIMESTAMP", "open_data_source"]


def _user_class(model: ModelSettings) -> type[DataSource]:
    module_name, _, class_name = model.data_source.class_path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"model {model.name}: data_source.class_path {model.data_source.class_path!r} cannot be imported "
            f"({error}); it must name a class in a module on the Python path of the code location"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, DataSource)):
        raise ConfigError(
            f"model {model.name}: data_source.class_path {model.data_source.class_path!r} is not a subclass of "
            "retrain_assets.datasource.DataSource"
        )
    return cls


def open_data_source(model: ModelSettings, database_url: str) -> DataSource:
    """The data source ``model`` declares; ``database_url`` is the monitoring database (the default)."""
    config = model.data_source
    if config.kind == "sql_table":
        return SqlTableSource(model, url=config.url or database_url, table=config.table, id_column=config.id_column,
                              timestamp_column=config.timestamp_column, labeled_at_column=config.labeled_at_column)
    if config.kind == "python":
        cls = _user_class(model)
        try:
            return cls(model, **config.params)
        except TypeError as error:
            raise ConfigError(f"model {model.name}: data_source.params do not fit {cls.__name__}: {error}") from None
    return PredictionLogSource(model, MonitoringStore(database_url))
