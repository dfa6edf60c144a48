"""Dataset versions and the model registry.

Statuses: ``candidate`` (trained, not yet gated or gated and waiting), ``rejected`` (failed a gate),
``production`` (the active model: at most one per name, enforced by a unique partial index),
``standby`` (the previous production model, kept for instant rollback), ``shadow`` (a gated candidate
scoring live requests beside production, unseen), ``canary`` (a gated candidate answering
``traffic_share`` of live requests) and ``archived``.

Promotion is one transaction: the old production becomes standby, the old standby is archived and the
candidate becomes production. Either all of it commits or none of it does, so a crash at any point leaves
exactly one consistent active model.
"""

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select, true, update

from retrain_assets.errors import StoreError
from retrain_assets.store.schema import dataset_versions, model_retraining_events, model_versions


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class DatasetVersion:
    model_name: str
    number: int
    tag: str
    content_hash: str
    artifact_key: str
    artifact_sha256: str
    profile_key: str | None
    profile_sha256: str | None
    rows: int
    max_label_id: int | None
    summary: dict
    source_query: str | None
    quality: dict | None
    run_id: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class ModelVersion:
    model_name: str
    version: int
    status: str
    artifact_key: str
    artifact_sha256: str
    size_bytes: int
    dataset_tag: str
    dataset_hash: str
    params: dict
    metrics: dict
    gate_results: list | None
    trigger: str | None
    reason: str | None
    run_id: str | None
    created_at: dt.datetime
    promoted_at: dt.datetime | None
    promoted_by_run_id: str | None
    proven_at: dt.datetime | None = None
    baseline_metrics: dict | None = None
    reference_key: str | None = None
    reference_sha256: str | None = None
    traffic_share: float | None = None
    step_started_at: dt.datetime | None = None
    step_log_id: int | None = None

    @property
    def label(self) -> str:
        return f"v{self.version}"

    @property
    def baseline(self) -> dict:
        """What monitoring compares live performance with: the live metrics of its validation period once
        proven, its test metrics before."""
        return self.baseline_metrics or self.metrics


def _dataset(row) -> DatasetVersion:
    return DatasetVersion(**{k: row._mapping[k] for k in DatasetVersion.__dataclass_fields__})


def _model(row) -> ModelVersion:
    return ModelVersion(**{k: row._mapping[k] for k in ModelVersion.__dataclass_fields__})


class Registry:
    def __init__(self, engine: Engine):
        self.engine = engine

    # Datasets ------------------------------------------------------------------------------------------
    def record_dataset(self, model_name: str, **fields: Any) -> DatasetVersion:
        """Register a dataset version with the next number for this model."""
        with self.engine.begin() as conn:
            number = (
                conn.execute(
                    select(func.coalesce(func.max(dataset_versions.c.number), 0)).where(
                        dataset_versions.c.model_name == model_name
                    )
                ).scalar_one()
                + 1
            )
            created = fields.pop("created_at", None) or _now()
            tag = f"v{number}-{created:%Y-%m-%d}"
            conn.execute(
                dataset_versions.insert().values(
                    model_name=model_name, number=number, tag=tag, created_at=created, **fields
                )
            )
            row = conn.execute(
                select(dataset_versions).where(
                    dataset_versions.c.model_name == model_name, dataset_versions.c.number == number
                )
            ).one()
        return _dataset(row)

    def dataset(self, model_name: str, tag: str) -> DatasetVersion:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(dataset_versions).where(
                    dataset_versions.c.model_name == model_name, dataset_versions.c.tag == tag
                )
            ).one_or_none()
        if row is None:
            raise StoreError(f"dataset {tag} of model {model_name} is not in the registry")
        return _dataset(row)

    def find_dataset(self, model_name: str, version: str) -> DatasetVersion:
        """A dataset by its tag (``v7-2026-12-01``) or its number (``v7``); the error lists the known ones."""
        number = version[1:] if version.startswith("v") and version[1:].isdigit() else None
        column = dataset_versions.c.number if number else dataset_versions.c.tag
        with self.engine.connect() as conn:
            row = conn.execute(select(dataset_versions).where(
                dataset_versions.c.model_name == model_name, column == (int(number) if number else version))).one_or_none()
            if row is None:
                known = conn.execute(select(dataset_versions.c.tag).where(dataset_versions.c.model_name == model_name)
                                     .order_by(dataset_versions.c.number.desc()).limit(10)).scalars().all()
        if row is None:
            raise StoreError(f"model {model_name} has no dataset version {version!r}; the newest are: "
                             f"{', '.join(known) or 'none (train it once first)'}")
        return _dataset(row)

    def latest_dataset(self, model_name: str, run_id: str | None = None) -> DatasetVersion | None:
        """The newest dataset (of ``run_id`` if given and present)."""
        query = select(dataset_versions).where(dataset_versions.c.model_name == model_name)
        with self.engine.connect() as conn:
            if run_id is not None:
                row = conn.execute(
                    query.where(dataset_versions.c.run_id == run_id).order_by(dataset_versions.c.number.desc())
                ).first()
                if row is not None:
                    return _dataset(row)
            row = conn.execute(query.order_by(dataset_versions.c.number.desc())).first()
        return None if row is None else _dataset(row)

    def critical_dataset_since(self, model_name: str, since: dt.datetime) -> DatasetVersion | None:
        """The model's newest dataset if its data quality was critical (a check failed) and it was created at
        or after ``since``. Only the newest counts: a later dataset that passed (the source was fixed, a
        person retrained) lifts the block."""
        newest = self.latest_dataset(model_name)
        if newest is None or newest.created_at < since or not newest.quality:
            return None
        return newest if any(not q.get("passed") for q in newest.quality) else None

    def record_quality(self, model_name: str, tag: str, results: list[Mapping]) -> None:
        """Store the data-quality check outcomes with the dataset they judged."""
        with self.engine.begin() as conn:
            conn.execute(
                update(dataset_versions)
                .where(dataset_versions.c.model_name == model_name, dataset_versions.c.tag == tag)
                .values(quality=[dict(r) for r in results])
            )

    # Model versions ------------------------------------------------------------------------------------
    def register_candidate(self, model_name: str, **fields: Any) -> ModelVersion:
        with self.engine.begin() as conn:
            version = (
                conn.execute(
                    select(func.coalesce(func.max(model_versions.c.version), 0)).where(
                        model_versions.c.model_name == model_name
                    )
                ).scalar_one()
                + 1
            )
            conn.execute(
                model_versions.insert().values(
                    model_name=model_name, version=version, status="candidate", created_at=_now(), **fields
                )
            )
        return self.version(model_name, version)

    def version(self, model_name: str, version: int) -> ModelVersion:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(model_versions).where(
                    model_versions.c.model_name == model_name, model_versions.c.version == version
                )
            ).one_or_none()
        if row is None:
            raise StoreError(f"model {model_name} has no version v{version} in the registry")
        return _model(row)

    def versions(self, model_name: str) -> list[ModelVersion]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(model_versions)
                .where(model_versions.c.model_name == model_name)
                .order_by(model_versions.c.version)
            ).all()
        return [_model(r) for r in rows]

    def newest(self, model_name: str) -> ModelVersion | None:
        """The model's newest version, whatever its status: its last training (one row, for the guards)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(model_versions).where(model_versions.c.model_name == model_name)
                               .order_by(model_versions.c.version.desc()).limit(1)).first()
        return None if row is None else _model(row)

    def with_status(self, model_name: str, status: str) -> ModelVersion | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(model_versions)
                .where(model_versions.c.model_name == model_name, model_versions.c.status == status)
                .order_by(model_versions.c.version.desc())
            ).first()
        return None if row is None else _model(row)

    def production(self, model_name: str) -> ModelVersion | None:
        return self.with_status(model_name, "production")

    def candidate_of_run(self, model_name: str, run_id: str) -> ModelVersion | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(model_versions)
                .where(model_versions.c.model_name == model_name, model_versions.c.run_id == run_id)
                .order_by(model_versions.c.version.desc())
            ).first()
        return None if row is None else _model(row)

    def last_failed_retrain(self, model_name: str) -> tuple[DatasetVersion, list[str]] | None:
        """The newest retrain that did not replace production, if it is newer than production's own dataset:
        its dataset and why it failed (data-quality checks or gates). Decisions use it so that evidence a
        failed retrain already acted on neither re-triggers nor counts twice."""
        latest = self.latest_dataset(model_name)
        if latest is None:
            return None
        production = self.production(model_name)
        if production is not None and self.dataset(model_name, production.dataset_tag).number >= latest.number:
            return None
        if latest.quality and not all(q["passed"] for q in latest.quality):
            return latest, [f"data quality: {q['name']}" for q in latest.quality if not q["passed"]]
        with self.engine.connect() as conn:
            rejected = conn.execute(
                select(model_versions.c.gate_results).where(
                    model_versions.c.model_name == model_name, model_versions.c.dataset_tag == latest.tag,
                    model_versions.c.status == "rejected")
            ).first()
        if rejected is None:
            return None
        return latest, [f"gate: {g['name']}" for g in (rejected.gate_results or []) if not g.get("passed")]

    def record_gates(self, model_name: str, version: int, gate_results: list[Mapping], passed: bool,
                     expected_status: str | None = None) -> bool:
        """Store every gate outcome with the candidate; a failed gate rejects it. With ``expected_status``,
        nothing changes unless the version still has that status (a canary promoted or rejected by another
        run meanwhile is left alone); returns whether the row was updated."""
        values: dict[str, Any] = {"gate_results": list(gate_results)}
        if not passed:
            values["status"] = "rejected"
        mv = model_versions
        with self.engine.begin() as conn:
            updated = conn.execute(
                update(mv)
                .where(mv.c.model_name == model_name, mv.c.version == version,
                       mv.c.status == expected_status if expected_status is not None else true())
                .values(**values)
            )
        return updated.rowcount > 0

    def promote(self, model_name: str, version: int, run_id: str | None = None,
                event_id: int | None = None, event_outcome: Mapping[str, Any] | None = None,
                from_status: str | None = None) -> ModelVersion | None:
        """Make ``version`` production, the old production standby, the old standby archived, and complete
        the retraining event ``event_id`` with ``event_outcome`` (columns of :func:`events.completion`), all in
        one transaction: a crash leaves neither a promotion without its outcome nor an outcome without it.

        Returns the previous production version (None for the first promotion). With ``from_status``, the
        version must still have that status (a canary another run rejected meanwhile is not promoted).
        """
        mv = model_versions
        of_model = mv.c.model_name == model_name
        with self.engine.begin() as conn:
            # FOR UPDATE (PostgreSQL): two promotions of one candidate serialize, and the second sees it promoted.
            target = conn.execute(select(mv.c.status).where(of_model, mv.c.version == version).with_for_update()).one_or_none()
            if target is None:
                raise StoreError(f"cannot promote {model_name} v{version}: no such version in the registry")
            if from_status is not None and target.status != from_status:
                raise StoreError(f"not promoting {model_name} v{version}: it is {target.status!r} now, no longer "
                                 f"{from_status!r} (another run decided on it meanwhile)")
            if target.status not in ("candidate", "shadow", "canary", "standby"):
                raise StoreError(
                    f"cannot promote {model_name} v{version}: its status is {target.status!r} "
                    "(only a gated candidate, the one in shadow or in canary, or the standby can be promoted)"
                )
            previous = conn.execute(select(mv).where(of_model, mv.c.status == "production")).first()
            conn.execute(update(mv).where(of_model, mv.c.status == "standby").values(status="archived"))
            if previous is not None:
                conn.execute(update(mv).where(of_model, mv.c.version == previous.version).values(status="standby"))
            conn.execute(
                update(mv)
                .where(of_model, mv.c.version == version)
                .values(status="production", promoted_at=_now(), promoted_by_run_id=run_id)
            )
            if event_id is not None:
                e = model_retraining_events
                conn.execute(update(e).where(e.c.id == event_id, e.c.execution_completed_at.is_(None))
                             .values(**(event_outcome or {})))
        return None if previous is None else _model(previous)

    def start_shadow(self, model_name: str, version: int) -> ModelVersion | None:
        """Put a gated candidate in shadow (it scores live traffic, users never see it). A candidate
        already in shadow is archived: the newer one replaces it. Returns the replaced one."""
        mv = model_versions
        of_model = mv.c.model_name == model_name
        with self.engine.begin() as conn:
            replaced = conn.execute(select(mv).where(of_model, mv.c.status == "shadow")).first()
            if replaced is not None:
                conn.execute(update(mv).where(of_model, mv.c.version == replaced.version).values(status="archived"))
            conn.execute(update(mv).where(of_model, mv.c.version == version, mv.c.status == "candidate")
                         .values(status="shadow"))
        return None if replaced is None else _model(replaced)

    def start_canary(self, model_name: str, version: int, share: float, log_id: int) -> ModelVersion | None:
        """Let a gated candidate answer ``share`` of live requests (the first canary step); the step's
        evidence is the predictions logged after ``log_id``. A candidate already in canary is archived: the
        newer one replaces it. Returns the replaced one."""
        mv = model_versions
        of_model = mv.c.model_name == model_name
        with self.engine.begin() as conn:
            replaced = conn.execute(select(mv).where(of_model, mv.c.status == "canary")).first()
            if replaced is not None:
                conn.execute(update(mv).where(of_model, mv.c.version == replaced.version).values(status="archived"))
            started = conn.execute(update(mv).where(of_model, mv.c.version == version, mv.c.status == "candidate")
                                   .values(status="canary", traffic_share=share, step_started_at=_now(),
                                           step_log_id=log_id))
            if started.rowcount != 1:
                raise StoreError(f"cannot start a canary of {model_name} v{version}: it is not a gated candidate")
        return None if replaced is None else _model(replaced)

    def step_canary(self, model_name: str, version: int, share: float, log_id: int) -> ModelVersion:
        """Move the canary to its next traffic share; the step's evidence is the predictions logged after
        ``log_id``."""
        mv = model_versions
        with self.engine.begin() as conn:
            moved = conn.execute(update(mv).where(mv.c.model_name == model_name, mv.c.version == version,
                                                  mv.c.status == "canary")
                                 .values(traffic_share=share, step_started_at=_now(), step_log_id=log_id))
        if moved.rowcount != 1:
            raise StoreError(f"cannot step the canary of {model_name}: v{version} is no longer in canary")
        return self.version(model_name, version)

    def rollback(self, model_name: str, run_id: str | None = None,
                 expected_production: int | None = None) -> tuple[ModelVersion, ModelVersion]:
        """Swap production and standby in one transaction; returns (restored, demoted).

        The demoted model becomes the standby, so a rollback can itself be undone. A crash at any point
        rolls the transaction back: exactly one production model, the one before, remains. With
        ``expected_production``, nothing is swapped unless that version is still production.
        """
        mv = model_versions
        of_model = mv.c.model_name == model_name
        with self.engine.begin() as conn:
            production = conn.execute(select(mv).where(of_model, mv.c.status == "production")).first()
            standby = conn.execute(select(mv).where(of_model, mv.c.status == "standby")).first()
            if expected_production is not None and (production is None or production.version != expected_production):
                raise StoreError(
                    f"not rolling back {model_name}: the rollback was requested for v{expected_production}, but "
                    f"production is {'v' + str(production.version) if production else 'none'} now (it changed since); "
                    "nothing was swapped. Roll back by hand (retrain rollback) if the current model misbehaves"
                )
            if production is None or standby is None:
                raise StoreError(
                    f"cannot roll back {model_name}: it needs a production and a standby version "
                    f"(production: {production.version if production else 'none'}, "
                    f"standby: {standby.version if standby else 'none'}); a standby exists after the second promotion"
                )
            conn.execute(update(mv).where(of_model, mv.c.version == production.version).values(status="standby"))
            conn.execute(
                update(mv)
                .where(of_model, mv.c.version == standby.version)
                .values(status="production", promoted_at=_now(), promoted_by_run_id=run_id)
            )
        return self.version(model_name, standby.version), self.version(model_name, production.version)

    def mark_proven(self, model_name: str, version: int, baseline_metrics: Mapping[str, float], keep: int) -> list[int]:
        """Record that ``version`` passed its validation period, make its live metrics the baseline, and
        archive the candidates beyond the newest ``keep`` versions that were never promoted (promotion
        already archives a replaced standby; rejected versions keep their status as their audit trail).
        Returns the versions archived now."""
        mv = model_versions
        of_model = mv.c.model_name == model_name
        with self.engine.begin() as conn:
            conn.execute(update(mv).where(of_model, mv.c.version == version)
                         .values(proven_at=_now(), baseline_metrics=dict(baseline_metrics)))
            newest = conn.execute(select(mv.c.version).where(of_model).order_by(mv.c.version.desc()).limit(keep)).scalars().all()
            old = conn.execute(select(mv.c.version).where(
                of_model, mv.c.status == "candidate", mv.c.version.not_in(newest) if newest else True)).scalars().all()
            if old:
                conn.execute(update(mv).where(of_model, mv.c.version.in_(old)).values(status="archived"))
        return sorted(old)
