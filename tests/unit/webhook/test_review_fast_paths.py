"""The review's fast JSON paths decide exactly like json.loads / json.dumps did.

`review.load_json` must give the value json.loads gives (same types: an integer stays an
integer however long, -0.0 stays -0.0) or raise json.loads's own error; `review.encode_review`
must write the same JSON value json.dumps wrote. Generated documents, number texts and raw bytes
attack the boundaries: integers around 2**63 and 2**64 (where orjson switches to floats), lone
surrogates, NaN and Infinity, byte order marks, invalid UTF-8, duplicate keys, deep nesting.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tenantry.admission import policy
from tenantry.model import tenant
from tenantry.webhook import review
from tests.unit.admission.admission_helpers import hardened_pod
from tests.unit.webhook.webhook_unit_helpers import review_body

BOUNDARIES = [2**53, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**18, 10**19 - 1, 10**19, 2**70]

scalars = st.one_of(
    st.none(), st.booleans(), st.text(),
    st.integers(), st.sampled_from([b + d for b in BOUNDARIES for d in (-1, 0, 1)]),
    st.sampled_from([-b for b in BOUNDARIES]),
    st.floats(allow_nan=True, allow_infinity=True),
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30)
number_texts = st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?",
                             fullmatch=True)


def outcome(parse: Any, body: bytes) -> tuple[str, str]:
    """What parsing `body` gives: the value's repr (which tells 1, 1.0 and True apart, and key
    order), or the error's type and message."""
    try:
        return "value", repr(parse(body))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        return type(error).__name__, str(error)


def assert_parses_alike(body: bytes) -> None:
    assert outcome(review.load_json, body) == outcome(json.loads, body)


@given(documents, st.booleans())
@settings(max_examples=400)
def test_documents_parse_as_json_loads_parses_them(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    # Lone surrogates written raw are invalid UTF-8: both must then refuse the body alike.
    assert_parses_alike(text.encode("utf-8", "surrogatepass"))


@given(number_texts)
@settings(max_examples=400)
@example("9223372036854775807")
@example("9223372036854775808")
@example("18446744073709551615")
@example("18446744073709551616")
@example("-9223372036854775809")
@example("-0")
@example("-0.0")
@example("1e400")
@example("-1e-400")
@example("0.1000000000000000055511151231257827021181583404541015625")
def test_numbers_parse_as_json_loads_parses_them(number: str) -> None:
    for text in (number, f'{{"runAsUser": {number}}}', f"[{number}, {number}]"):
        assert_parses_alike(text.encode())


@given(st.binary(max_size=64))
@settings(max_examples=400)
@example(b"\xef\xbb\xbf{}")
@example('{"a": 1}'.encode("utf-16"))
@example(b'{"a": NaN, "b": -Infinity}')
@example(b'{"a": "\\ud800"}')
@example(b'{"a": "\xff"}')
@example(b'{"a": 1, "b": 2, "a": 3}')
@example(b"[" * 2000 + b"]" * 2000)
@example(b'{"a": "\x00"}')
@example(b"")
def test_raw_bytes_parse_or_fail_as_json_loads(body: bytes) -> None:
    assert_parses_alike(body)


def test_a_long_integer_in_a_pod_stays_an_integer() -> None:
    """orjson would read 2**64 as a float; the rules must see what json.loads gives."""
    pod = hardened_pod()
    pod["spec"]["securityContext"]["runAsUser"] = 2**64
    body = json.dumps(review_body(pod)).encode()
    parsed = review.parse_review(body)
    assert parsed.object is not None
    assert parsed.object["spec"]["securityContext"]["runAsUser"] == 2**64
    assert type(parsed.object["spec"]["securityContext"]["runAsUser"]) is int


@pytest.mark.parametrize("mutate", [
    lambda pod: pod,
    lambda pod: pod["spec"]["securityContext"].update(runAsUser=0),
    lambda pod: pod["spec"]["securityContext"].update(runAsUser=2**64),
    lambda pod: pod["spec"]["securityContext"].update(runAsUser=1.5),
    lambda pod: pod["spec"].update(hostNetwork=True),
    lambda pod: pod["spec"]["containers"][0].update(name="\ud800"),
])
def test_the_decision_is_the_one_json_loads_gave(mutate: Any) -> None:
    pod = hardened_pod()
    mutate(pod)
    body = json.dumps(review_body(pod)).encode()
    fast = review.parse_review(body).object
    reference = json.loads(body)["request"]["object"]
    assert repr(fast) == repr(reference)
    assert fast is not None
    spec = tenant.PodSecurity()
    assert policy.evaluate(fast, spec) == policy.evaluate(reference, spec)


messages = st.text() | st.sampled_from(["\ud800 lone", "tenant 'a' … ünïcode", "\x00\n\t\""])


@given(st.booleans(), messages, st.lists(messages, max_size=3),
       st.dictionaries(st.text(min_size=1), messages, max_size=3),
       st.sampled_from([400, 403, 422, 500, 503, 418]))
@settings(max_examples=300)
def test_answers_encode_to_the_json_value_json_dumps_wrote(
        allowed: bool, message: str, warnings: list[str], annotations: dict[str, str],
        code: int) -> None:
    verdict = (review.Verdict.allow(warnings=tuple(warnings), audit_annotations=annotations)
               if allowed else review.Verdict.deny(message, code=code, warnings=tuple(warnings),
                                                   audit_annotations=annotations))
    answer = review.review_response("uid-1", verdict)
    encoded = review.encode_review(answer)
    assert repr(json.loads(encoded)) == repr(json.loads(json.dumps(answer)))


def test_a_pod_review_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The equality above is not won by always falling back: a pod's review is read by orjson."""
    body = json.dumps(review_body(hardened_pod())).encode()

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("json.loads called for a body orjson reads exactly")

    monkeypatch.setattr(review.json, "loads", refuse)
    assert review.parse_review(body).object == hardened_pod()
