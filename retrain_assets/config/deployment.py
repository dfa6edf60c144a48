"""Deployment settings: the strategy (direct, shadow, canary), the post-deploy watch, its phases and
automatic rollback."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class DeploymentSettings(BaseModel):
    """How a gated candidate reaches traffic (direct, shadow, canary), the watch, rollback, proven models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["direct", "shadow", "canary"] = Field(
        "direct",
        description="How a gated candidate reaches traffic once a production model exists. direct: it is promoted "
                    "(blue/green, the previous model stays loaded as standby). shadow: it first scores live requests "
                    "beside production, unseen by users, and is promoted if it does no worse on the same labeled "
                    "requests. canary: it answers a growing share of live requests (canary_steps), each step judged "
                    "on the post-deploy watch's criteria against production over the same period; the last step "
                    "promotes it. The first model is always promoted directly.")
    canary_steps: tuple[float, ...] = Field(
        (0.05, 0.5, 1.0),
        description="Canary: the shares of live requests the candidate answers, in order (seed 002: 5 %, 50 %, "
                    "100 %). Each step holds until the candidate has watch_min_samples labeled requests since the step "
                    "began, then is judged on the watch's criteria against production over the same period. "
                    "The last must be 1: reaching it is the promotion.")

    canary_max_hours: float = Field(
        72.0, gt=0,
        description="Canary: a step not judged this long after it began (too few labeled requests: are labels "
                    "arriving, can the servers load it?) rolls the canary back; it holds the model's one open retrain "
                    "meanwhile, so it must not wait for ever.")
    serving_smoke_requests: int = Field(
        100, ge=0,
        description="Before a gated candidate takes traffic (promotion, canary or shadow), this many sample requests "
                    "(the newest served ones, else its dataset's rows) go through the serving path with it loaded as "
                    "a server loads a standby: every request answered, scores in [0, 1] or finite predictions, p99 "
                    "under gates.max_latency_p99_s (seed 004). A failure rejects it. 0: off.")
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
    rollback_max_error_rate: float | None = Field(
        0.05, gt=0, lt=1,
        description="Roll back when more than this share of the new model's prediction requests failed (it raised; "
                    "the server answered 500), counted by every server process (seed 002: error rate > 5 %; judged in "
                    "the watch and the close watch once watch_latency_min_requests requests were counted). null: off.")
    close_watch_hours: float = Field(
        24.0, ge=0,
        description="After the watch, a close watch until this many hours after the promotion (seed 002: 'monitor "
                    "closely for the first 24 hours'): the absolute criteria keep rolling back; the relative ones "
                    "(against the previous model) belong to the watch alone.")
    validation_days: float = Field(7.0, gt=0, description="A model serving this long without rollback is proven.")
    keep_versions: int = Field(5, ge=2, description="Unpromoted candidates beyond the newest K versions are archived.")
    shadow_min_samples: int = Field(200, ge=10, description="Labeled shadowed requests needed before the shadow decision.")

    @model_validator(mode="before")
    @classmethod
    def _legacy_shadow(cls, data):
        """``shadow: true`` (before ``strategy`` existed) reads as ``strategy: shadow``."""
        if isinstance(data, dict) and "shadow" in data:
            data = dict(data)
            shadow = data.pop("shadow")
            if not shadow:
                return data  # shadow: false says nothing against any strategy
            implied = "shadow"
            if data.setdefault("strategy", implied) != implied:
                raise ValueError(f"deployment.shadow: {str(shadow).lower()} contradicts deployment.strategy: "
                                 f"{data['strategy']}; keep only strategy (shadow is its older spelling)")
        return data

    @field_validator("canary_steps")
    @classmethod
    def _steps_rise_to_one(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if not steps or steps[-1] != 1.0 or any(not 0 < s <= 1 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"canary_steps must rise strictly within (0, 1] and end at 1 (the promotion), e.g. "
                             f"[0.05, 0.5, 1.0]; got {list(steps)}")
        return steps

    @property
    def shadow(self) -> bool:
        return self.strategy == "shadow"
