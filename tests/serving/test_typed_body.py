"""/predict/batch validates a JSON body straight from its bytes, rows typed for its model, and leaves every body
it refuses to FastAPI's documented path (JSON parser, documented body, then the model's rows), which answers
the errors. That is only right if the typed path never accepts what the documented path refuses, and accepts
what it accepts with the same values: checked here on generated bodies, with one model and with two (a union
chosen by ``model``)."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from retrain_assets.config.serving import ServingSettings
from retrain_assets.serving.api import _batch_request_model, _request_id_errors, typed_request
from retrain_assets.serving.schemas import row_adapter, typed_batch_adapter
from retrain_assets.settings import ModelSettings
from retrain_assets.simulate import model_config

SERVING = ServingSettings(max_rows_per_request=4, max_category_length=8)
CHURN = ModelSettings(**model_config("churn"))
USAGE = ModelSettings(**model_config("usage", task="regression"))
MODELS = {"churn": CHURN, "usage": USAGE}

values = st.one_of(
    st.none(), st.booleans(), st.integers(-10**25, 10**25), st.text(max_size=10),
    st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(), max_size=2),
)


def documented(body: bytes, models: dict[str, ModelSettings]):
    """What FastAPI's path accepts: (model, typed rows, request ids), or None where it answers an error."""
    try:
        payload = json.loads(body)
        request = _batch_request_model(SERVING).model_validate(payload)
        model = models[request.model]
        rows = row_adapter(model, SERVING).validate_python(request.rows)
    except (ValueError, KeyError, ValidationError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    if _request_id_errors(request.request_ids, len(request.rows)):
        return None
    return request.model, rows, request.request_ids


def typed(body: bytes, adapter):
    """What the typed path serves without the documented one, in the same shape."""
    request = typed_request(adapter, body)
    return None if request is None else (request.model, request.rows, request.request_ids)


@st.composite
def bodies(draw, declared: tuple[str, ...]):
    """Mostly valid bodies with some field gone wrong: values of any JSON type, missing or extra keys,
    an unknown model, too many rows, repeated or overlong request ids, NaN/Infinity, a lone surrogate."""
    name = draw(st.sampled_from([*declared, "fraud"]))
    model = MODELS.get(name, CHURN)

    def good(feature: str):
        return draw(st.floats(-1e6, 1e6) | st.none()) if feature in model.numeric_features else \
            draw(st.text("abc", max_size=3) | st.none())

    rows = []
    for _ in range(draw(st.integers(0, 5))):
        row = {feature: good(feature) for feature in model.feature_names}
        if draw(st.booleans()):
            row[draw(st.sampled_from([*model.feature_names, "extra"]))] = draw(values)
        if draw(st.integers(0, 9)) == 0:
            row.pop(draw(st.sampled_from(model.feature_names)))
        rows.append(row)
    payload = {"model": name, "rows": rows}
    if draw(st.booleans()):
        payload["request_ids"] = draw(st.lists(st.text(max_size=70) | st.sampled_from(["a", "a"]),
                                               min_size=max(len(rows) - 1, 0), max_size=len(rows) + 1))
    if draw(st.integers(0, 9)) == 0:
        payload[draw(st.sampled_from(["model", "rows", "request_ids", "other"]))] = draw(values)
    text = json.dumps(payload, allow_nan=True, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 19)) == 0:
        text = text.replace('"a', '"\\ud800a', 1)  # a lone surrogate escape: json.loads takes it, the schema does not
    return text.encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("declared", [["churn"], ["churn", "usage"]], ids=["one model", "two models"])
def test_the_typed_body_accepts_exactly_what_the_documented_path_accepts_with_the_same_values(declared):
    models = {name: MODELS[name] for name in declared}
    adapter = typed_batch_adapter(list(models.values()), SERVING)
    accepted = []

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(bodies(tuple(declared)))
    def check(body):
        fast, slow = typed(body, adapter), documented(body, models)
        if fast is not None:  # accepted: served without the documented path, so it must agree, types too
            assert repr(slow) == repr(fast)  # (1 == 1.0 == True, but each is logged as its own JSON)
            accepted.append(body)
        elif slow is not None:  # refused by the typed path alone: only for what its JSON parser refuses
            assert b"\\ud800" in body

    check()
    assert accepted  # the typed path is reachable: valid bodies take it


def test_byte_order_marks_and_lone_surrogates_are_left_to_the_documented_path():
    """Python's JSON parser takes both; pydantic-core's does not: the documented path answers them (a
    byte-order mark is served, a lone surrogate refused with its field)."""
    adapter = typed_batch_adapter([CHURN], SERVING)
    row = {feature: None for feature in CHURN.feature_names}
    body = json.dumps({"model": "churn", "rows": [row]}).encode()
    assert typed(body, adapter) == documented(body, MODELS) == ("churn", [row], None)
    assert typed(b"\xef\xbb\xbf" + body, adapter) is None and documented(b"\xef\xbb\xbf" + body, MODELS) is not None
    surrogate = json.dumps({"model": "churn", "rows": [{**row, "region": "\ud800"}]}).encode()
    assert typed(surrogate, adapter) is None and documented(surrogate, MODELS) is None
