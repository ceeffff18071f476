"""Bad extension requests against the lifetimes service of a real hub: every one is a 400 (413 for a body too
large) with a message that says what to send, never a 5xx, an OverflowError or a traceback, and the session's
extension is unchanged afterwards."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import requests
from lifetimes_harness import LifetimesHub

from aifacility.lifetimes.service.handlers import MAX_BODY_BYTES

MB = 1024 * 1024


@pytest.fixture(scope="module")
def bob(hub: LifetimesHub) -> Iterator[str]:
    token = hub.user_token("bob")
    hub.start_server("bob", "cpu")
    yield token


def _extended(hub: LifetimesHub, token: str) -> float:
    r = hub.lifetimes("GET", "/users/bob/server", token=token)
    assert r.status_code == 200, r.text
    return float(r.json()["extended_hours"])


def _refused(r: requests.Response, status: int, phrase: str) -> str:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert "Traceback" not in r.text and "OverflowError" not in r.text
    message = str(r.json()["message"])
    assert phrase in message, message
    assert len(message) < 500
    return message


@pytest.mark.parametrize(("body", "phrase"), [
    (b'{"hours": 1e308}', "one extension adds at most 0.01 h (asked for 1e+308 h)"),
    (b'{"hours": 1e400}', "must be a positive number of hours, not inf"),
    (b'{"hours": ' + b"9" * 400 + b"}", "(asked for more than 1e308 h)"),
    (b'{"hours": NaN}', "must be a positive number of hours, not nan"),
    (b'{"hours": Infinity}', "must be a positive number of hours, not inf"),
    (b'{"hours": -Infinity}', "must be a positive number of hours"),
    (b'{"hours": -1}', "must be a positive number of hours, not -1"),
    (b'{"hours": 0}', "must be a positive number of hours, not 0"),
    (b'{"hours": "2"}', "'hours' must be a number of hours"),
    (b'{"hours": null}', "'hours' must be a number of hours"),
    (b'{"hours": true}', "'hours' must be a number of hours"),
    (b'{"hours": [1]}', "'hours' must be a number of hours"),
    (b'{"hours": ' + b"[" * 1500 + b"]" * 1500 + b"}", "The body must be JSON"),
    (b"\xff\xfe{}", "The body must be JSON"),
    (b'"hours"', 'The body must be a JSON object with "hours"'),
])
def test_a_bad_extension_is_a_400_that_says_what_to_send(hub: LifetimesHub, bob: str, body: bytes,
                                                         phrase: str) -> None:
    _refused(hub.lifetimes("POST", "/users/bob/server/extend", token=bob, data=body), 400, phrase)
    assert _extended(hub, bob) == 0


def test_a_huge_body_is_a_413_and_changes_nothing(hub: LifetimesHub, bob: str) -> None:
    body = b'{"hours": 0.001, "pad": "' + b"x" * (8 * MB) + b'"}'
    message = _refused(hub.lifetimes("POST", "/users/bob/server/extend", token=bob, data=body), 413,
                       f"at most {MAX_BODY_BYTES} are accepted")
    assert str(len(body)) in message
    assert _extended(hub, bob) == 0
    # the service still answers, and a good extension still works
    r = hub.lifetimes("POST", "/users/bob/server/extend", token=bob, json={"hours": 0.001})
    assert r.status_code == 200, r.text
    assert _extended(hub, bob) == pytest.approx(0.001)


def test_a_body_announced_beyond_any_limit_is_refused_before_it_is_sent(hub: LifetimesHub, bob: str) -> None:
    """Straight to the service (the proxy in front of it holds an answer until the request's body is sent)."""
    found = re.search(r"lifetimes service on (http://\S+)", hub.log())
    assert found, hub.log()[-2000:]
    url = urlparse(found.group(1))
    before = _extended(hub, bob)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=30) as s:
        s.sendall(b"POST /services/lifetimes/api/users/bob/server/extend HTTP/1.1\r\n"
                  b"Host: " + url.netloc.encode() + b"\r\n"
                  b"Authorization: token " + bob.encode() + b"\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n")
        answer = b""
        while b"}" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:500]
    assert b"The request's body is 1000000000 bytes" in rest
    assert _extended(hub, bob) == before


def _page(hub: LifetimesHub, user: str) -> tuple[requests.Session, str]:
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30).raise_for_status()
    s.post(f"{hub.url}/hub/login?next=%2Fhub%2Fhome",
           data={"username": user, "password": "x", "_xsrf": s.cookies["_xsrf"]}, timeout=30).raise_for_status()
    form = s.get(f"{hub.url}/services/lifetimes/", timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
    assert xsrf, form.text[:2000]
    return s, xsrf.group(1)


@pytest.mark.parametrize(("hours", "status", "phrase"), [
    ("1e308", 400, "one extension adds at most"),
    ("nan", 400, "positive number of hours"),
    ("-inf", 400, "positive number of hours"),
    ("9" * 400, 400, "positive number of hours, not inf"),
    ("x" * (64 * 1024), 413, f"at most {MAX_BODY_BYTES} are accepted"),
])
def test_the_extend_form_answers_bad_hours_with_the_page_and_the_reason(hub: LifetimesHub, bob: str, hours: str,
                                                                       status: int, phrase: str) -> None:
    before = _extended(hub, bob)
    page, xsrf = _page(hub, "bob")
    r = page.post(f"{hub.url}/services/lifetimes/extend", data={"server": "", "hours": hours, "_xsrf": xsrf},
                  timeout=60)
    assert r.status_code == status, (r.status_code, r.text[:1000])
    assert "Traceback" not in r.text and phrase in r.text
    assert len(r.text) < 32 * 1024
    assert _extended(hub, bob) == before
