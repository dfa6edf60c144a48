"""Deployment settings: the post-deploy watch and automatic rollback."""

from pydantic import BaseModel, ConfigDict, Field


class DeploymentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    watch_minutes: float = Field(30.0, gt=0, description="How long after a promotion the new model is watched.")
    watch_min_samples: int = Field(100, ge=10, description="Labeled predictions needed before judging it.")
    watch_f1_drop: float = Field(0.05, gt=0, lt=1, description="Classification: roll back when live F1 falls by more.")
    watch_mae_increase: float = Field(0.20, gt=0, description="Regression: roll back when live MAE grows by more (relative).")
    validation_days: float = Field(7.0, gt=0, description="A model serving this long without rollback is proven.")
    keep_versions: int = Field(5, ge=2, description="Unpromoted candidates beyond the newest K versions are archived.")
