"""Every route with a path parameter refuses control characters with a clear 4xx, and no error echoes raw input."""

from __future__ import annotations

import re

import pytest

from server.app import create_app

# Percent-encoded characters no ticket number, username or id holds: C0, DEL, C1 (NEL), bidi override, zero-width space.
HOSTILE = ["%00", "%01", "%0A", "%0D", "%09", "%1B", "%7F", "%C2%85", "%E2%80%AE", "%E2%80%8B"]


def routes_with_parameters(runtime):
    """(method, path) of every route in the app whose path has a parameter, as its OpenAPI document lists them."""
    paths = create_app(runtime).openapi()["paths"]
    return [(method.upper(), path) for path, operations in paths.items() if "{" in path for method in operations]


def test_there_are_routes_with_parameters_to_check(runtime):
    paths = {path for _, path in routes_with_parameters(runtime)}
    assert {"/v1/tickets/{number}", "/v1/agents/{agent_id}", "/v1/accounts/{username}", "/v1/tokens/{token_id}"} <= paths


@pytest.mark.parametrize("encoded", HOSTILE)
def test_control_characters_in_any_path_parameter_get_a_400_that_does_not_echo_them(helpline, runtime, encoded):
    admin = helpline.admin()
    pc = helpline.enrolled_pc()
    for method, path in routes_with_parameters(runtime):
        url = re.sub(r"\{[^}]+\}", f"T-10{encoded}42", path)
        for token in (admin, pc.credential):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = helpline.http.request(method, url, headers=headers, content=b"{}" if method != "GET" else None)
            assert response.status_code == 400, f"{method} {url}: {response.status_code} {response.text}"
            error = response.json()["error"]
            assert error["code"] == "bad_request" and "control characters" in error["message"]
            assert not any(ch in response.text for ch in "\x00\x01\x1b\x7f\x85\u202e\u200b")


def test_refusals_quote_what_they_refused_printable_and_cut(helpline):
    admin = helpline.admin()
    long_id = "a" * 5000
    message = helpline.call("GET", f"agents/{long_id}", admin).json()["error"]["message"]
    assert len(message) < 120 and "…" in message
    message = helpline.call("PATCH", f"accounts/{long_id}", admin, json={"disabled": True}).json()["error"]["message"]
    assert len(message) < 120
    code = "\x1b]0;owned\x07\x1b[2J" + "Z" * 3000
    pc = helpline.enrolled_pc()
    response = helpline.call("POST", "pair", pc, json={"code": code, **pc.key.signed("pair", "code", code)})
    error = response.json()["error"]["message"]
    assert response.status_code == 422 and "\x1b" not in error and "\x07" not in error and len(error) < 120
