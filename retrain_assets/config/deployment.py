"""Deployment settings: shadow evaluation, the post-deploy watch, its phases and automatic rollback."""

from pydantic import BaseModel, ConfigDict, Field


class DeploymentSettings(BaseModel):
    """After a promotion: shadow evaluation, the post-deploy watch, automatic rollback, proven models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    watch_minutes: float = Field(30.0, gt=0, description="How long after a promotion the new model is watched.")
    watch_min_samples: int = Field(100, ge=10, description="Labeled predictions (or, for latency, served rows) needed before judging it.")
    watch_f1_drop: float = Field(0.05, gt=0, lt=1, description="Classification: roll back when live F1 falls by more.")
    watch_mae_increase: float = Field(0.20, gt=0, description="Regression: roll back when live MAE grows by more (relative).")
    watch_latency_ratio: float = Field(2.0, gt=1, description="Roll back when live p99 request latency exceeds the previous model's by this factor...")
    watch_latency_floor_ms: float = Field(20.0, ge=0, description="...and is above this many ms (below it, jitter is not a spike).")
    watch_latency_min_requests: int = Field(20, ge=5, description="Timed requests of each model needed before latency is judged.")
    rollback_min_accuracy: float | None = Field(
        0.75, gt=0, le=1,
        description="Classification: roll back when live accuracy falls below this, whatever the previous model did "
                    "(seed 002's absolute criterion; judged in the watch and the close watch). null: off.")
    rollback_max_latency_ms: float | None = Field(
        5000.0, gt=0,
        description="Roll back when the live p99 request latency exceeds this many ms (seed 002: latency > 5 s; "
                    "judged in the watch and the close watch once watch_latency_min_requests are timed). null: off.")
    close_watch_hours: float = Field(
        24.0, ge=0,
        description="After the watch, a close watch until this many hours after the promotion (seed 002: 'monitor "
                    "closely for the first 24 hours'): the absolute criteria keep rolling back; the relative ones "
                    "(against the previous model) belong to the watch alone.")
    validation_days: float = Field(7.0, gt=0, description="A model serving this long without rollback is proven.")
    keep_versions: int = Field(5, ge=2, description="Unpromoted candidates beyond the newest K versions are archived.")
    shadow: bool = Field(False, description="A gated candidate first scores live traffic beside production (shadow) and is "
                                            "promoted only if it does no worse on the same labeled requests.")
    shadow_min_samples: int = Field(200, ge=10, description="Labeled shadowed requests needed before the shadow decision.")
