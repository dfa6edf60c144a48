"""Typed settings loaded from one YAML file.

Why one file: every threshold the product acts on (drift, performance, gates, triggers, schedules) is
declared once, with the design documents' numbers as defaults, so that a decision can always be traced to
one line of configuration. The file is ``retrain.yaml`` in the working directory unless the environment
variable ``RETRAIN_CONFIG`` names another.

Shape of the file::

    storage:  {database_url: ..., artifact_root: ...}   # optional; env vars override
    serving:  {max_rows_per_request: ..., spill_dir: ...} # optional; the HTTP API's limits
    defaults: {drift: {...}, gates: {...}, ...}          # optional; applies to every model
    models:
      - name: churn
        task: classification
        target: churned
        features: [{name: tenure_months, type: numeric}, {name: contract, type: categorical}]
        gates: {min_precision: 0.9}                      # per-model override of a default block

A model's blocks are the ``defaults`` blocks with the model's own keys laid over them (key by key), so a
model only states what differs.
"""

import os
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retrain_assets.config.deployment import DeploymentSettings
from retrain_assets.config.monitoring import DecisionSettings, DriftSettings, MonitoringSettings, PerformanceSettings
from retrain_assets.config.serving import ServingSettings
from retrain_assets.config.training import DatasetSettings, GateSettings, TrainingSettings
from retrain_assets.errors import ConfigError

CONFIG_ENV_VAR = "RETRAIN_CONFIG"
DATABASE_URL_ENV_VAR = "RETRAIN_DATABASE_URL"
ARTIFACT_ROOT_ENV_VAR = "RETRAIN_ARTIFACT_ROOT"
DEFAULT_CONFIG_FILE = "retrain.yaml"

_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_literal_password(url: str | None) -> str | None:
    from retrain_assets.store.database import has_password, redact

    if url and has_password(url):
        raise ValueError(
            f"{redact(url)} holds a password: written here it would be shown by `retrain config` and stored in "
            "Dagster's code snapshot and resource page. Put the URL in an environment variable and write "
            "env:NAME instead (RETRAIN_DATABASE_URL is read that way for the monitoring database)"
        )
    return url


class FeatureSpec(_Strict):
    """One input of the model (an entry of `features`)."""

    name: str = Field(description="The column name, as the data source and the serving requests carry it.")
    type: Literal["numeric", "categorical"] = Field(description="numeric or categorical.")
    min: float | None = Field(None, description="numeric: the smallest possible value (e.g. 0 for an age); lower is an error.")
    max: float | None = Field(None, description="numeric: the largest possible value; higher is an error.")
    values: tuple[str, ...] | None = Field(
        None, description="categorical: the only possible levels; any other is an error (unset: new levels are drift, "
                          "shown in the drift report, not an error)."
    )

    @model_validator(mode="after")
    def _bounds_fit_type(self):
        if self.type == "numeric" and self.values is not None:
            raise ValueError(f"feature {self.name!r}: `values` is for categorical features; use min/max")
        if self.type == "categorical" and (self.min is not None or self.max is not None):
            raise ValueError(f"feature {self.name!r}: min/max are for numeric features; use `values`")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} is above max {self.max}")
        return self


class EstimatorSettings(_Strict):
    """The model family and its fixed parameters (tuning searches around them)."""

    type: Literal["hist_gradient_boosting", "random_forest", "logistic_regression", "linear_regression"] = Field(
        "hist_gradient_boosting",
        description="The scikit-learn family (linear_regression is ridge; logistic_regression is a classifier).",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Fixed parameters of the estimator (tuning searches around them)."
    )


class DataSourceSettings(_Strict):
    """Where the model's labeled rows and recent inputs come from (see docs/data-sources.md).

    ``sql`` (default): the monitoring store's prediction log joined with its labels, written by
    ``retrain serve``. ``sql_table``: a table of yours, one row per request with features, label (NULL until
    known), a timestamp and an increasing integer id. ``python``: your own ``DataSource`` subclass.
    """

    kind: Literal["sql", "sql_table", "python"] = Field(
        "sql", description="sql: the prediction log; sql_table: a table of yours; python: your DataSource class."
    )
    model_key: str | None = Field(
        None, description="sql: name the model's rows carry in the prediction log (default: the model name)."
    )
    url: str | None = Field(
        None, description="sql_table: SQLAlchemy URL of its database (default: the monitoring database), or env:NAME "
                          "for one held in an environment variable (required when it has a password).")

    @field_validator("url")
    @classmethod
    def _safe_url(cls, value: str | None) -> str | None:
        return _no_literal_password(value)
    table: str | None = Field(None, description="sql_table: the table, optionally schema-qualified (marts.scored).")
    id_column: str = Field(
        "id", description="sql_table: increasing integer id per row; the watermark of new labels when rows are "
                          "written with their label (append-only)."
    )
    timestamp_column: str = Field("timestamp", description="sql_table: when the row was scored (UTC).")
    labeled_at_column: str | None = Field(
        None, description="sql_table: timestamp column of when each label arrived; set it when labels are filled "
                          "into rows scored earlier (it then is the watermark of new labels)."
    )
    class_path: str | None = Field(None, description="python: 'package.module:ClassName' of a DataSource subclass.")
    params: dict[str, Any] = Field(default_factory=dict, description="python: keyword arguments of that class.")

    @model_validator(mode="after")
    def _complete(self):
        if self.kind == "sql_table" and not self.table:
            raise ValueError("kind sql_table needs `table` (the table holding features, label, id and timestamp)")
        if self.kind == "python" and (not self.class_path or ":" not in self.class_path):
            raise ValueError("kind python needs `class_path: package.module:ClassName` (a DataSource subclass)")
        return self


class TriggerSettings(_Strict):
    """When an automatic retrain is requested, and the guards applied to every automatic trigger."""

    new_labels_now: int = Field(10_000, ge=1, description="New labeled rows: retrain now.")
    new_labels_scheduled: int = Field(5_000, ge=1, description="New labeled rows: retrain at next quiet window.")
    retrain_cron: str = Field("0 3 * * 0", description="Weekly retrain (default Sunday 03:00).")
    monitoring_cron: str = Field("0 */6 * * *", description="Monitoring cadence (default every 6 hours).")
    timezone: str = Field("UTC", description="IANA time zone of the crons and the quiet window.")
    min_samples: int = Field(
        100, ge=1,
        description="Labeled rows since the last training (all of them before the first) an automatic trigger needs. "
                    "Seed 004 asks 10,000 new samples; the replays show a fixed count that large blocks every retrain of "
                    "a model with small batches (electricity: 336 rows a week), so the default is 100 with "
                    "min_new_labels_fraction; write 10000 for the seed's rule.")
    min_new_labels_fraction: float = Field(
        0.10, ge=0, lt=1,
        description="...and at least this share of the rows the last training had: a training window that changed by "
                    "less gives back nearly the same model however bad the current one looks, so the retrain waits "
                    "for the next labeled batch.")
    cooldown_hours: float = Field(24.0, ge=0, description="No automatic retrain this soon after the last.")
    quality_block_hours: float = Field(
        24.0, ge=0,
        description="A dataset of the model whose data-quality status was critical (a check failed) within this many "
                    "hours blocks automatic retraining, whatever the severity (seed 004: 'data quality status not "
                    "critical in the last day'); fix the source, or retrain by hand. 0: off.")
    incident_after_failures: int = Field(
        3, ge=0,
        description="After this many consecutive failed retrains of a model (run failure, data quality, gates), a P1 "
                    "incident is opened for it, which blocks its automatic retraining until resolved (seed 004: 'if "
                    "repeated failures -> create incident, investigate data quality'). 0: never.",
    )
    min_days_between_scheduled: float = Field(
        3.0, ge=0,
        description="The scheduled retrain skips a model trained (by any trigger) within this many days, recorded as a "
                    "skipped schedule event: a drift retrain on Friday makes Sunday's calendar retrain redundant (seed "
                    "001's 'days since last training'; its 7-day interval is the weekly retrain_cron itself). 0: never skip.",
    )
    run_timeout_minutes: float = Field(
        180.0, gt=0,
        description="A retrain run longer than this is stopped by run monitoring (its dagster/max_runtime tag); a run "
                    "still queued or running past it no longer blocks new triggers (its worker is presumed dead).",
    )
    sensor_interval_s: int = Field(60, ge=5, description="How often sensors are evaluated.")
    quiet_start_hour: int = Field(1, ge=0, le=23, description="MEDIUM triggers wait for the quiet window: its first hour.")
    quiet_end_hour: int = Field(5, ge=0, le=24, description="End of the quiet window (exclusive hour, in `timezone`).")

    @model_validator(mode="after")
    def _bands_ordered(self):
        if self.new_labels_scheduled > self.new_labels_now:
            raise ValueError("new_labels_scheduled must not exceed new_labels_now")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {self.timezone!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
        return self


class ModelSettings(_Strict):
    """One production model watched by retrain-assets. Each becomes its own Dagster asset group."""

    name: str = Field(description="Letters, digits and _: the asset group, key prefix and job/sensor name prefix.")
    task: Literal["classification", "regression"] = Field(description="classification or regression.")
    target: str = Field(description="The label column.")
    features: tuple[FeatureSpec, ...] = Field(
        min_length=1, description="The inputs, each {name, type: numeric | categorical}."
    )
    description: str = Field("", description="What the model is for (shown on its assets and model card).")
    owners: tuple[str, ...] = Field(
        (), description="Dagster owners of its assets: emails or team:<name>."
    )
    positive_label: Any = Field(1, description="Classification: the class precision/recall refer to.")
    estimator: EstimatorSettings = EstimatorSettings()
    data_source: DataSourceSettings = DataSourceSettings()
    dataset: DatasetSettings = DatasetSettings()
    training: TrainingSettings = TrainingSettings()
    gates: GateSettings = GateSettings()
    drift: DriftSettings = DriftSettings()
    performance: PerformanceSettings = PerformanceSettings()
    decision: DecisionSettings = DecisionSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    deployment: DeploymentSettings = DeploymentSettings()
    triggers: TriggerSettings = TriggerSettings()

    @model_validator(mode="before")
    @classmethod
    def _seed_gates_follow_seed_policy(cls, raw: Any) -> Any:
        """``decision.policy: seed`` brings the seed's point gates, unless gates.comparison says otherwise."""
        if isinstance(raw, Mapping) and isinstance(raw.get("decision"), Mapping) and raw["decision"].get("policy") == "seed":
            gates = raw.get("gates")
            if gates is None or (isinstance(gates, Mapping) and "comparison" not in gates):
                raw = {**raw, "gates": {**(gates or {}), "comparison": "point"}}
        return raw

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME_PATTERN.match(value):
            raise ValueError(
                "must start with a letter and contain only letters, digits and '_' (it becomes a Dagster "
                f"asset key prefix and group name), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self):
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature names must be unique, repeated: {duplicates}")
        if self.target in names:
            raise ValueError(f"target {self.target!r} must not also be a feature")
        if self.monitoring.window_rows < self.deployment.watch_min_samples:
            raise ValueError(f"monitoring.window_rows ({self.monitoring.window_rows}) must be at least "
                             f"deployment.watch_min_samples ({self.deployment.watch_min_samples}): the watch and the "
                             "canary judge the newest window_rows labeled predictions, so fewer could never be judged")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.type == "numeric"]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.type == "categorical"]

    @property
    def log_key(self) -> str:
        """The model name its rows carry in the prediction log."""
        return self.data_source.model_key or self.name


class StorageSettings(_Strict):
    """The monitoring store (SQLAlchemy URL) and the artifact folder.

    ``RETRAIN_DATABASE_URL`` and ``RETRAIN_ARTIFACT_ROOT`` override the file, so one config serves a
    laptop (embedded SQLite) and production (PostgreSQL) alike.
    """

    database_url: str = Field(
        "sqlite:///.retrain/monitoring.db",
        description="SQLAlchemy URL of the monitoring store (relative SQLite paths: relative to the config file), or "
                    "env:NAME for one held in an environment variable (required when it has a password). Env "
                    "RETRAIN_DATABASE_URL overrides it.",
    )
    @field_validator("database_url")
    @classmethod
    def _safe_url(cls, value: str) -> str:
        return _no_literal_password(value)

    artifact_root: str = Field(
        ".retrain/artifacts",
        description="Where models, datasets, profiles and drift pictures are kept: a folder, or an fsspec URL "
                    "(s3://bucket/prefix with s3fs installed, gs:// with gcsfs) so that machines share them. "
                    "Env RETRAIN_ARTIFACT_ROOT overrides it.",
    )


class RetrainSettings(_Strict):
    storage: StorageSettings = StorageSettings()
    serving: ServingSettings = ServingSettings()
    models: tuple[ModelSettings, ...] = Field(min_length=1, description="The models to watch (at least one).")

    @model_validator(mode="after")
    def _unique_models(self):
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique, repeated: {duplicates}")
        keys = [m.log_key for m in self.models if m.data_source.kind == "sql"]
        shared = sorted({k for k in keys if keys.count(k) > 1})
        if shared:
            raise ValueError(
                f"models share the prediction-log name {shared}: each model needs its own rows (set a distinct "
                "data_source.model_key per model, never under defaults)"
            )
        return self

    @cached_property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def model(self, name: str) -> ModelSettings:
        for model in self.models:
            if model.name == name:
                return model
        raise ConfigError(
            f"model {name!r} is not declared in the configuration; declared models: {self.model_names}"
        )


_PER_MODEL_BLOCKS = (
    "estimator", "data_source", "dataset", "training", "gates", "drift", "performance", "decision", "monitoring",
    "deployment", "triggers",
)


def _overlay(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    items = error.errors()
    nested = {tuple(i["loc"][:-1]) for i in items if len(i["loc"]) > 1}
    # A list whose items failed is also reported as "too short"; the item errors are the useful ones.
    items = [i for i in items if not (i["type"] == "too_short" and tuple(i["loc"]) in {n[: len(i["loc"])] for n in nested})]
    for item in items:
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "literal_error" and "expected" in item.get("ctx", {}):
            message = f"must be one of {item['ctx']['expected']}, got {item.get('input')!r}"
        lines.append(f"  - {location}: {message}")
    return "\n".join(lines)


def _resolve_sqlite_url(url: Any, base_dir: Path) -> Any:
    """A relative SQLite path in the file is relative to the file, not to wherever a command was started."""
    if isinstance(url, str) and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        relative = url[len("sqlite:///"):]
        if relative and relative != ":memory:":
            return "sqlite:///" + str((base_dir / relative).resolve())
    return url


def _resolve_storage_paths(storage: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Relative paths in the file are relative to the file, not to wherever a command was started."""
    storage["database_url"] = _resolve_sqlite_url(storage.get("database_url"), base_dir)
    root = storage.get("artifact_root")
    if isinstance(root, str) and "://" not in root and not Path(root).is_absolute():
        storage["artifact_root"] = str((base_dir / root).resolve())
    return storage


def settings_from_dict(
    raw: Mapping[str, Any], source: str = "<dict>", base_dir: Path | None = None
) -> RetrainSettings:
    """Validate a parsed config mapping; errors name the bad key and the allowed values.

    ``base_dir`` anchors relative storage paths (the config file's folder; default: the current one).
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"invalid configuration in {source}: the top level must be a mapping with 'models'")
    raw = dict(raw)
    defaults = raw.pop("defaults", None) or {}
    unknown_defaults = sorted(set(defaults) - set(_PER_MODEL_BLOCKS))
    if unknown_defaults:
        raise ConfigError(
            f"invalid configuration in {source}:\n  - defaults.{unknown_defaults[0]}: unknown key "
            f"(allowed: {list(_PER_MODEL_BLOCKS)})"
        )
    models = raw.get("models")
    if isinstance(models, list):
        raw["models"] = [_overlay(defaults, m) if isinstance(m, Mapping) else m for m in models]
        for model in raw["models"]:
            block = model.get("data_source") if isinstance(model, Mapping) else None
            if isinstance(block, Mapping) and block.get("url"):
                model["data_source"] = {**block, "url": _resolve_sqlite_url(block["url"], base_dir or Path.cwd())}
    storage = raw.get("storage") or {}
    if not isinstance(storage, Mapping):
        raise ConfigError(f"invalid configuration in {source}:\n  - storage: must be a mapping")
    storage = _resolve_storage_paths({**StorageSettings().model_dump(), **storage}, base_dir or Path.cwd())
    if os.environ.get(DATABASE_URL_ENV_VAR):
        # A reference, resolved where connections are opened: the URL's password never enters the settings,
        # Dagster's resources, snapshots or anything printed.
        storage["database_url"] = f"env:{DATABASE_URL_ENV_VAR}"
    if os.environ.get(ARTIFACT_ROOT_ENV_VAR):
        storage["artifact_root"] = os.environ[ARTIFACT_ROOT_ENV_VAR]
    raw["storage"] = storage
    serving = raw.get("serving")
    if isinstance(serving, Mapping) and isinstance(serving.get("spill_dir"), str):
        raw["serving"] = {**serving, "spill_dir": str((base_dir or Path.cwd()) / Path(serving["spill_dir"]).expanduser())}
    try:
        return RetrainSettings.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from None


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_FILE)


def load_settings(path: str | Path | None = None) -> RetrainSettings:
    """Load and validate the config file (``RETRAIN_CONFIG`` or ./retrain.yaml)."""
    path = Path(path) if path is not None else config_path()
    if not path.is_file():
        raise ConfigError(
            f"configuration file {path} not found: create it (see retrain.yaml in the repository) or set "
            f"{CONFIG_ENV_VAR} to its path"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"configuration file {path} is not valid YAML: {error}") from None
    return settings_from_dict(raw or {}, source=str(path), base_dir=path.resolve().parent)
