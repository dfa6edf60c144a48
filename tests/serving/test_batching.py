"""Adaptive batching in the prediction lane: requests waiting together for the same version share one model
call, with the answers each would get alone; a request the model fails on fails alone. The lane's own
rules (same key only, the row limit, arrival order, one answer per job) are tested without a model."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pandas as pd

from retrain_assets.config.serving import ServingSettings
from retrain_assets.serving.api import create_app
from retrain_assets.serving.batching import BatchingLane
from tests.faults.conftest import Backend, logged, running, served_settings, traffic_rows, wait_until
from tests.serving.conftest import TOKEN, WrappedModel, quick, register
from tests.serving.test_follow import samples, value


def test_the_lane_combines_waiting_jobs_of_one_key_within_the_row_limit_in_arrival_order():
    release, calls = threading.Event(), []

    def run_batch(jobs):
        calls.append([job.payload for job in jobs])
        if len(calls) == 1:
            release.wait(30)  # the first job holds the lane while the others queue behind it
        return [ValueError(job.payload) if job.payload == "a-bad" else job.payload.upper() for job in jobs]

    async def scenario():
        lane = BatchingLane(run_batch, max_batch_rows=250)
        first = asyncio.ensure_future(lane.submit("a", 100, "a1"))
        while not calls:
            await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(lane.submit(key, 100, payload))
                for key, payload in [("a", "a2"), ("b", "b1"), ("a", "a3"), ("a", "a-bad"), ("b", "b2")]]
        while lane.waiting < 5:
            await asyncio.sleep(0.01)
        release.set()
        answers = await asyncio.gather(first, *rest, return_exceptions=True)
        lane.shutdown()
        return answers

    answers = asyncio.run(scenario())
    # a2 and a3 fill the 250-row limit; b1 and b2 go together; a-bad comes last, in a call of its own
    assert calls == [["a1"], ["a2", "a3"], ["b1", "b2"], ["a-bad"]]
    assert answers[:4] == ["A1", "A2", "B1", "A3"] and answers[5] == "B2"
    assert isinstance(answers[4], ValueError) and str(answers[4]) == "a-bad"


def test_the_answers_of_one_batch_wake_the_event_loop_once():
    """Each call_soon_threadsafe is a write to the loop's wake-up pipe: a system call in the prediction thread,
    which gives the GIL away and waits for it back. A batch's answers go in one."""
    release, calls, wakeups = threading.Event(), [], []

    def run_batch(jobs):
        calls.append(len(jobs))
        if len(calls) == 1:
            release.wait(30)
        return [job.payload * 2 for job in jobs]

    async def scenario():
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *args, **kwargs: wakeups.append(args[0]) or original(*args, **kwargs)
        lane = BatchingLane(run_batch, max_batch_rows=1000)
        first = asyncio.ensure_future(lane.submit("a", 1, 1))
        while not calls:
            await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(lane.submit("a", 1, n)) for n in range(2, 6)]
        while lane.waiting < 4:
            await asyncio.sleep(0.01)
        release.set()
        answers = await asyncio.gather(first, *rest)
        lane.shutdown()
        return answers

    assert asyncio.run(scenario()) == [2, 4, 6, 8, 10]
    assert calls == [1, 4] and len(wakeups) == 2


def test_a_batch_limit_of_one_row_scores_every_request_alone():
    calls = []

    async def scenario():
        lane = BatchingLane(lambda jobs: calls.append(len(jobs)) or [j.payload for j in jobs], max_batch_rows=1)
        answers = await asyncio.gather(*(lane.submit("a", 5, i) for i in range(6)))
        lane.shutdown()
        return answers

    assert asyncio.run(scenario()) == list(range(6)) and calls == [1] * 6


class ManualClock:
    """The lane's clock, moved by the test: a wait runs out when the test says its time is up, never because
    the machine was busy. ``advance`` wakes the lane (as a submit would); ``jump`` does not (the lane thread
    then notices only at its next wake-up: a thread waking late)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def jump(self, seconds: float) -> None:
        self.now += seconds

    def advance(self, lane: BatchingLane, seconds: float) -> None:
        with lane._cond:
            self.now += seconds
            lane._cond.notify_all()


async def until(condition) -> None:
    """Poll ``condition`` on the event loop (what it waits for does not depend on time: the clock is manual)."""
    while not condition():
        await asyncio.sleep(0.01)


async def queued_during_the_wait(lane: BatchingLane, name: str) -> asyncio.Future:
    """Once the lane waits for the two clients of its call of [a2, a3], queue ``name`` (alone: not enough)."""
    await until(lambda: lane.expecting == 2)
    job = asyncio.ensure_future(lane.submit("a", 100, name))
    await until(lambda: lane.waiting == 1)
    return job


def _held_first_call(max_wait_seconds: float):
    """A lane whose first call waits for ``release`` (so that a2 and a3 queue behind a1 and are scored
    together next), and the calls it made (payloads); ``lane.waits`` has each wait's outcome (filled),
    ``lane.clock`` its ManualClock."""
    release, calls, waits = threading.Event(), [], []

    def run_batch(jobs):
        calls.append([job.payload for job in jobs])
        if len(calls) == 1:
            release.wait(30)
        return [job.payload for job in jobs]

    clock = ManualClock()
    lane = BatchingLane(run_batch, max_batch_rows=1000, max_wait_seconds=max_wait_seconds, on_wait=waits.append,
                        clock=clock)
    lane.waits, lane.clock = waits, clock

    async def two_answered():
        first = asyncio.ensure_future(lane.submit("a", 100, "a1"))
        while not calls:
            await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(lane.submit("a", 100, name)) for name in ("a2", "a3")]
        while lane.waiting < 2:
            await asyncio.sleep(0.01)
        release.set()
        assert await asyncio.gather(first, *rest) == ["a1", "a2", "a3"]

    return lane, calls, two_answered


def test_after_a_call_of_several_requests_the_next_waits_for_as_many_to_come_back():
    """Clients answered together come back together: the call after [a2, a3] waits for two requests instead
    of scoring b1 at once and leaving b2 queued behind it."""
    lane, calls, two_answered = _held_first_call(max_wait_seconds=60)

    async def scenario():
        await two_answered()
        await until(lambda: lane.expecting == 2)  # the lane waits for the two clients it answered
        b1 = asyncio.ensure_future(lane.submit("a", 100, "b1"))
        await asyncio.sleep(0.3)
        started_alone = len(calls) > 2  # a lane that does not wait has taken b1 alone by now
        b2 = asyncio.ensure_future(lane.submit("a", 100, "b2"))
        answers = await asyncio.wait_for(asyncio.gather(b1, b2), 20)
        lane.shutdown()
        return started_alone, answers

    started_alone, answers = asyncio.run(scenario())
    assert not started_alone and answers == ["b1", "b2"]
    assert calls == [["a1"], ["a2", "a3"], ["b1", "b2"]] and lane.waits == [True]


def test_without_a_wait_the_next_call_takes_what_is_queued():
    lane, calls, two_answered = _held_first_call(max_wait_seconds=0)

    async def scenario():
        await two_answered()
        b1 = await asyncio.wait_for(lane.submit("a", 100, "b1"), 20)
        b2 = await asyncio.wait_for(lane.submit("a", 100, "b2"), 20)
        lane.shutdown()
        return [b1, b2]

    assert asyncio.run(scenario()) == ["b1", "b2"]
    assert calls == [["a1"], ["a2", "a3"], ["b1"], ["b2"]] and lane.waits == []


def test_a_lone_client_never_waits_and_one_that_does_not_come_back_costs_one_wait():
    """After [a2, a3], only b1 comes (while the lane waits for two): it is scored alone once the wait runs
    out. The call after it answered one request, so c1 and d1 are scored at once although the lane may now
    wait a minute (a lane that waited here would time out)."""
    lane, calls, two_answered = _held_first_call(max_wait_seconds=5)

    async def scenario():
        await two_answered()
        b1 = await queued_during_the_wait(lane, "b1")
        lane.clock.advance(lane, 10)  # the wait runs out
        b1 = await asyncio.wait_for(b1, 20)
        lane.max_wait_seconds = 60
        rest = [await asyncio.wait_for(lane.submit("a", 100, name), 20) for name in ("c1", "d1")]
        lane.shutdown()
        return [b1, *rest]

    assert asyncio.run(scenario()) == ["b1", "c1", "d1"]
    assert calls == [["a1"], ["a2", "a3"], ["b1"], ["c1"], ["d1"]] and lane.waits == [False]


def test_a_request_reaching_an_idle_lane_does_not_wait_for_the_clients_of_an_old_call():
    """The wait after the call that answered [a2, a3] runs out with nothing queued (the lane expects one
    request again): c1, coming later, is scored at once and nobody waited."""
    lane, calls, two_answered = _held_first_call(max_wait_seconds=5)

    async def scenario():
        await two_answered()
        await until(lambda: lane.expecting == 2)
        lane.clock.advance(lane, 10)
        await until(lambda: lane.expecting == 1)
        answer = await asyncio.wait_for(lane.submit("a", 100, "c1"), 20)
        lane.shutdown()
        return answer

    assert asyncio.run(scenario()) == "c1"
    assert calls == [["a1"], ["a2", "a3"], ["c1"]] and lane.waits == []


def test_a_lane_waking_late_reports_only_what_happened_before_its_deadline():
    """The lane thread may wake after its wait's deadline (a busy machine). c1, queued only after the
    deadline, never waited: nothing is reported. b1 came in time but b2 only after the deadline: the wait ran
    out (timed_out), although both are queued when the lane looks."""
    lane, calls, two_answered = _held_first_call(max_wait_seconds=0.5)

    async def scenario():
        await two_answered()
        await until(lambda: lane.expecting == 2)
        lane.clock.jump(1)  # past the deadline; the lane notices at its own timeout (0.5 s)
        answer = await asyncio.wait_for(lane.submit("a", 100, "c1"), 20)
        lane.shutdown()
        return answer

    assert asyncio.run(scenario()) == "c1"
    assert calls == [["a1"], ["a2", "a3"], ["c1"]] and lane.waits == []

    lane, calls, two_answered = _held_first_call(max_wait_seconds=60)

    async def late_company():
        await two_answered()
        b1 = await queued_during_the_wait(lane, "b1")
        lane.clock.jump(100)
        b2 = asyncio.ensure_future(lane.submit("a", 100, "b2"))  # two queued: wakes the lane
        answers = await asyncio.wait_for(asyncio.gather(b1, b2), 20)
        lane.shutdown()
        return answers

    assert asyncio.run(late_company()) == ["b1", "b2"]
    assert calls[2:] == [["b1", "b2"]] and lane.waits == [False]


def _left_out(queued: list[tuple[str, int, str]], waits: list) -> tuple[list, list]:
    """a1 holds the lane while ``queued`` (key, rows, name) queue behind it; the answers and the calls, with a
    lane that may wait a minute for the clients of a call (a lane that waited would time out)."""
    release, calls = threading.Event(), []

    def run_batch(jobs):
        calls.append([job.payload for job in jobs])
        if len(calls) == 1:
            release.wait(30)
        return [job.payload for job in jobs]

    async def scenario():
        lane = BatchingLane(run_batch, max_batch_rows=1000, max_wait_seconds=60, on_wait=waits.append)
        first = asyncio.ensure_future(lane.submit("a", 100, "a1"))
        while not calls:
            await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(lane.submit(key, rows, name)) for key, rows, name in queued]
        while lane.waiting < len(queued):
            await asyncio.sleep(0.01)
        release.set()
        answers = await asyncio.wait_for(asyncio.gather(first, *rest), 20)
        lane.shutdown()
        return answers

    return asyncio.run(scenario()), calls


def test_a_job_left_out_of_a_call_never_waits_again():
    """b1 (another key: a canary, another model) or a4 (beyond the row limit) queue behind a1 with a2 and a3;
    the call of [a2, a3] leaves it out. It has waited a whole call, so the next call takes it at once,
    although the lane expects two requests after a call of two."""
    waits = []
    answers, calls = _left_out([("a", 100, "a2"), ("b", 100, "b1"), ("a", 100, "a3")], waits)
    assert answers == ["a1", "a2", "b1", "a3"] and calls == [["a1"], ["a2", "a3"], ["b1"]] and waits == []
    answers, calls = _left_out([("a", 400, "a2"), ("a", 400, "a3"), ("a", 400, "a4")], waits)
    assert answers == ["a1", "a2", "a3", "a4"] and calls == [["a1"], ["a2", "a3"], ["a4"]] and waits == []


def test_the_clients_of_a_call_end_its_wait_whichever_version_they_are_routed_to():
    """After the call of [a2, a3], one client comes back routed to another version (b1: a canary's share,
    another model) and one to the same (a4). Both are back, so the wait ends (waiting for two of one version
    would hold every call under a canary for its whole wait): b1 goes first, alone, then a4."""
    lane, calls, two_answered = _held_first_call(max_wait_seconds=60)

    async def scenario():
        await two_answered()
        await until(lambda: lane.expecting == 2)
        b1 = asyncio.ensure_future(lane.submit("b", 100, "b1"))
        a4 = asyncio.ensure_future(lane.submit("a", 100, "a4"))
        answers = await asyncio.wait_for(asyncio.gather(b1, a4), 20)
        lane.shutdown()
        return answers

    assert asyncio.run(scenario()) == ["b1", "a4"]
    assert calls[2:] == [["b1"], ["a4"]] and lane.waits == [True]


def test_a_call_with_enough_requests_queued_does_not_wait_and_reports_nothing():
    """c1 and c2 queue during the call of [a2, a3]: as many as it answered, so the next call takes them at
    once; only waits a request sat through are counted in /metrics."""
    holds, calls, waits = {1: threading.Event(), 2: threading.Event()}, [], []

    def run_batch(jobs):
        calls.append([job.payload for job in jobs])
        if len(calls) in holds:
            holds[len(calls)].wait(30)
        return [job.payload for job in jobs]

    async def queued(lane, names, count):
        futures = [asyncio.ensure_future(lane.submit("a", 100, name)) for name in names]
        while lane.waiting < count:
            await asyncio.sleep(0.01)
        return futures

    async def scenario():
        lane = BatchingLane(run_batch, max_batch_rows=1000, max_wait_seconds=60, on_wait=waits.append)
        first = asyncio.ensure_future(lane.submit("a", 100, "a1"))
        while not calls:
            await asyncio.sleep(0.01)
        second = await queued(lane, ["a2", "a3"], 2)
        holds[1].set()
        while len(calls) < 2:
            await asyncio.sleep(0.01)
        third = await queued(lane, ["c1", "c2"], 2)
        holds[2].set()
        answers = await asyncio.wait_for(asyncio.gather(first, *second, *third), 20)
        lane.shutdown()
        return answers

    assert asyncio.run(scenario()) == ["a1", "a2", "a3", "c1", "c2"]
    assert calls == [["a1"], ["a2", "a3"], ["c1", "c2"]] and waits == []


def test_the_wait_ends_when_the_queued_rows_fill_a_call_or_the_lane_stops():
    lane, calls, two_answered = _held_first_call(max_wait_seconds=60)

    async def scenario():
        await two_answered()
        await until(lambda: lane.expecting == 2)  # the lane waits for the two clients it answered
        full = await asyncio.wait_for(lane.submit("a", 1000, "full"), 20)  # 1000 rows: a call's worth
        waiting = asyncio.ensure_future(lane.submit("a", 100, "last"))  # the call after "full" answered one
        last = await asyncio.wait_for(waiting, 20)
        lane.shutdown()
        return [full, last]

    assert asyncio.run(scenario()) == ["full", "last"]
    assert calls[2:] == [["full"], ["last"]] and lane.waits == [True]

    lane, calls, two_answered = _held_first_call(max_wait_seconds=60)

    async def stopping():
        await two_answered()
        b1 = asyncio.ensure_future(lane.submit("a", 100, "b1"))
        while lane.waiting < 1:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.to_thread(lane.shutdown), 20)  # scores b1 instead of waiting for company
        return await b1

    assert asyncio.run(stopping()) == "b1" and calls[2:] == [["b1"]] and lane.waits == []


def test_a_scorer_answering_the_wrong_number_of_results_fails_that_batch_and_the_lane_goes_on():
    calls = []

    def run_batch(jobs):
        calls.append(len(jobs))
        return [] if len(calls) == 1 else [job.payload for job in jobs]

    async def scenario():
        lane = BatchingLane(run_batch, max_batch_rows=1000, initializer=lambda: 1 / 0)  # serves without it
        first = await asyncio.wait_for(asyncio.gather(lane.submit("a", 1, "a1"), return_exceptions=True), 20)
        second = await asyncio.wait_for(lane.submit("a", 1, "a2"), 20)
        lane.shutdown()
        return first[0], second

    first, second = asyncio.run(scenario())
    assert isinstance(first, RuntimeError) and "answered 0 results for 1 requests" in str(first)
    assert second == "a2" and calls == [1, 1]


def _lane_that_stops_on_its_second_batch(held: threading.Event):
    """A lane whose own code fails (not the model's) when it takes its second batch."""
    taken = []
    lane = BatchingLane(lambda jobs: held.wait(30) and [job.payload for job in jobs], max_batch_rows=1)
    take = lane._next_batch

    def failing_take():
        taken.append(1)
        if len(taken) == 2:
            raise MemoryError("a fault of the lane itself")
        return take()

    lane._next_batch = failing_take
    return lane


def test_a_lane_that_stops_on_its_own_error_answers_every_waiting_and_later_request_instead_of_hanging():
    held = threading.Event()
    lane = _lane_that_stops_on_its_second_batch(held)

    async def scenario():
        first = asyncio.ensure_future(lane.submit("a", 1, "a1"))
        queued = [asyncio.ensure_future(lane.submit("a", 1, name)) for name in ("a2", "a3")]
        while lane.waiting < 2:
            await asyncio.sleep(0.01)
        held.set()
        answers = await asyncio.wait_for(asyncio.gather(first, *queued, return_exceptions=True), 20)
        try:
            await lane.submit("a", 1, "later")
        except RuntimeError as error:
            answers.append(error)
        return answers

    first, *failed = asyncio.run(scenario())
    assert first == "a1" and len(failed) == 3
    assert all(isinstance(error, RuntimeError) and "MemoryError: a fault of the lane itself" in str(error)
               for error in failed)
    assert isinstance(lane.stopped_by, MemoryError)
    lane.shutdown()  # returns: the thread has ended


class Gated(WrappedModel):
    """Production whose first call waits for the test (so requests queue behind it), that records the
    rows of every call, and raises on an absurd tenure (a bug on some inputs)."""

    release = threading.Event()
    calls: list[int] = []

    def predict_proba(self, frame):
        Gated.calls.append(len(frame))
        if len(Gated.calls) == 1:
            Gated.release.wait(60)
        if (frame["tenure_months"] > 1000).any():
            raise ValueError("overflow in the tenure transform")
        return self.inner.predict_proba(frame)


@contextmanager
def gated_server(tmp_path, churn_pipeline, **serving):
    """A real server whose production is ``Gated`` (``serving``: setting overrides): yields (store, app, base url,
    client)."""
    path = tmp_path / "monitoring.db"
    settings, store = served_settings(tmp_path, Backend("sqlite", f"sqlite:///{path}", path=path), churn_pipeline)
    register(settings, store, Gated(churn_pipeline), 2)
    Gated.release.clear()
    Gated.calls.clear()
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path, **serving))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        wait_until(lambda: http.get("/readyz").json()["models"]["churn"]["serving"] == "v2", 30, "v2 to serve")
        yield store, app, base, http


def queued_behind_a_first_request(app, base: str, first: dict, bodies: list[dict]) -> list[httpx.Response]:
    """Send ``first``; while the model holds the lane with it, queue ``bodies``; release; the responses, first's
    first."""
    def post(body):
        return httpx.post(f"{base}/predict/batch", json=body, timeout=60)

    with ThreadPoolExecutor(len(bodies) + 1) as pool:
        held = pool.submit(post, first)
        wait_until(lambda: Gated.calls, 30, "the first request to reach the model")
        queued = [pool.submit(post, body) for body in bodies]
        wait_until(lambda: app.state.lane.waiting == len(bodies), 30, "the requests queued behind it")
        Gated.release.set()
        return [held.result()] + [f.result() for f in queued]


def test_requests_queued_together_share_one_model_call_and_a_failing_one_fails_alone(tmp_path, churn_pipeline):
    bodies = [{"model": "churn", "rows": traffic_rows(3, seed=20 + i), "request_ids": [f"r{i}-{j}" for j in range(3)]}
              for i in range(5)]
    bodies.append({"model": "churn", "rows": [{**row, "tenure_months": 5000.0} for row in traffic_rows(3)],
                   "request_ids": ["bad-0", "bad-1", "bad-2"]})
    with gated_server(tmp_path, churn_pipeline) as (store, app, base, _):
        responses = queued_behind_a_first_request(app, base, bodies[0], bodies[1:])
    # one call for the first; the five queued ones together (15 rows, which raised); then each alone
    assert Gated.calls == [3, 15, 3, 3, 3, 3, 3], Gated.calls
    assert [r.status_code for r in responses] == [200] * 5 + [500]
    assert "overflow in the tenure transform" in responses[5].json()["detail"]
    for body, response in zip(bodies[:5], responses[:5]):  # the answers each request gets alone
        alone = churn_pipeline.predict_proba(pd.DataFrame(body["rows"]))[:, 1]
        assert response.json()["request_ids"] == body["request_ids"]
        assert np.allclose(response.json()["scores"], alone)
    rows = logged(store, [rid for body in bodies for rid in body["request_ids"]])
    assert sorted(rows) == sorted(rid for body in bodies[:5] for rid in body["request_ids"])
    assert {row["model_version"] for row in rows.values()} == {2}


def test_a_queued_batch_scores_what_each_request_would_get_alone(tmp_path, churn_pipeline):
    """Without a failure: the queued requests are answered from one call of all their rows, each row with
    its own request id, score and the version that answered; the log holds every row once."""
    sizes = [1, 7, 2, 40]
    bodies = [{"model": "churn", "rows": traffic_rows(n, seed=40 + i)} for i, n in enumerate(sizes)]
    bodies[2]["rows"][0] = {**bodies[2]["rows"][0], "region": "a region never seen", "contract": None}
    with gated_server(tmp_path, churn_pipeline) as (store, app, base, http):
        first, *queued = queued_behind_a_first_request(app, base, {"model": "churn", "rows": traffic_rows(2)}, bodies)
        assert first.status_code == 200
        answers = [response.json() for response in queued]
        calls = samples(http, "retrain_predict_batch_requests_count")  # two model calls: one alone, four together
        assert value(calls, model="churn") == 2
        assert value(samples(http, "retrain_predict_batch_requests_sum"), model="churn") == 5
        assert app.state.lane.max_wait_seconds == ServingSettings().max_batch_wait_ms / 1000 == 0.005
    assert Gated.calls == [2, sum(sizes)]
    for body, answer in zip(bodies, answers):
        frame = pd.DataFrame(body["rows"])
        assert answer["model_version"] == "v2" and len(answer["request_ids"]) == len(body["rows"])
        assert np.allclose(answer["scores"], churn_pipeline.predict_proba(frame)[:, 1])
        assert answer["predictions"] == churn_pipeline.predict(frame).tolist()
    rows = wait_until(lambda: (found := logged(store, [r for a in answers for r in a["request_ids"]]))
                      and len(found) == sum(sizes) and found, 30, "every row in the log")
    assert {row["model_version"] for row in rows.values()} == {2}


def test_the_server_waits_for_the_clients_of_a_call_as_configured_and_counts_the_waits(tmp_path, churn_pipeline):
    """The lane waits as configured: the call after one that answered three requests waits for three more
    (the wait raised to a minute once the setting is checked, ample on a busy machine): sent at once, they are
    scored in one call, and /metrics counts one wait that filled."""
    bodies = [{"model": "churn", "rows": traffic_rows(2, seed=60 + i)} for i in range(6)]
    with gated_server(tmp_path, churn_pipeline, max_batch_wait_ms=1000) as (store, app, base, http):
        assert app.state.lane.max_wait_seconds == 1
        app.state.lane.max_wait_seconds = 60
        responses = queued_behind_a_first_request(app, base, {"model": "churn", "rows": traffic_rows(2)}, bodies[:3])
        with ThreadPoolExecutor(3) as pool:
            responses += pool.map(lambda body: httpx.post(f"{base}/predict/batch", json=body, timeout=60), bodies[3:])
        assert [r.status_code for r in responses] == [200] * 7
        waits = samples(http, "retrain_predict_batch_waits_total")
        assert value(waits, outcome="filled") == 1 and value(waits, outcome="timed_out") == 0
    assert Gated.calls == [2, 6, 6]


def test_a_server_whose_prediction_lane_stopped_answers_500_and_fails_liveness_and_readiness(tmp_path, churn_pipeline):
    with gated_server(tmp_path, churn_pipeline) as (store, app, base, http):
        assert http.get("/healthz").json() == {"status": "ok"}
        app.state.lane._next_batch = lambda: (_ for _ in ()).throw(MemoryError("a fault of the lane itself"))
        response = http.post("/predict/batch", json={"model": "churn", "rows": traffic_rows(2)})
        assert response.status_code == 500 and "the prediction lane stopped" in response.json()["detail"]
        again = http.post("/predict/batch", json={"model": "churn", "rows": traffic_rows(2)})
        assert again.status_code == 500 and "MemoryError: a fault of the lane itself" in again.json()["detail"]
        live, ready = http.get("/healthz"), http.get("/readyz")
        assert live.status_code == 503 and "prediction lane stopped (MemoryError" in live.json()["status"]
        assert ready.status_code == 503 and any("prediction lane stopped" in r for r in ready.json()["reasons"])
    assert Gated.calls == []
