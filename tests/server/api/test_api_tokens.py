"""Engineers' tokens: listing and revoking them, and what ends them (password change, reset, disable)."""

from __future__ import annotations

import pytest

from protocol.schemas import Role, password_problem
from tests.server.conftest import PASSWORD

NEW_PASSWORD = "correct horse battery staple"


def login(helpline, username: str, password: str = PASSWORD, name: str = "cli") -> str:
    return helpline.ok("POST", "auth/login", json={"username": username, "password": password, "token_name": name})["token"]


def works(helpline, token: str) -> bool:
    return helpline.call("GET", "me", token).status_code == 200


def test_an_engineer_lists_own_live_tokens_with_the_current_one_marked(helpline, clock):
    alice = helpline.account()
    laptop, desk = login(helpline, alice, name="laptop"), login(helpline, alice, name="desk")
    helpline.ok("GET", "me", desk)
    login(helpline, helpline.account())  # someone else's token is not listed
    listed = helpline.ok("GET", "me/tokens", laptop)
    assert [(t["name"], t["current"], t["account"]) for t in listed] == [("laptop", True, alice), ("desk", False, alice)]
    assert listed[1]["last_used_at"] is not None and listed[0]["expires_at"]
    assert all("token" not in t and "token_hash" not in t for t in listed)
    clock.advance(hours=helpline.settings.token_ttl_hours + 1)
    fresh = login(helpline, alice, name="later")
    assert [t["name"] for t in helpline.ok("GET", "me/tokens", fresh)] == ["later"]  # expired ones are gone


def test_an_engineer_revokes_an_own_token_and_it_stops_working_at_once(helpline):
    alice = helpline.account()
    laptop, desk = login(helpline, alice, name="laptop"), login(helpline, alice, name="desk")
    desk_id = next(t["id"] for t in helpline.ok("GET", "me/tokens", laptop) if t["name"] == "desk")
    answer = helpline.ok("DELETE", f"tokens/{desk_id}", laptop)
    assert answer["id"] == desk_id and answer["current"] is False
    assert not works(helpline, desk) and works(helpline, laptop)
    [event] = helpline.audit("token.revoke")
    assert event.actor_id == alice and event.details["token_id"] == desk_id


def test_an_engineer_cannot_revoke_or_see_another_accounts_token(helpline):
    alice, bob = helpline.account(), helpline.account()
    alice_token, bob_token = login(helpline, alice), login(helpline, bob)
    bob_id = helpline.ok("GET", "me/tokens", bob_token)[0]["id"]
    refused = helpline.call("DELETE", f"tokens/{bob_id}", alice_token)
    missing = helpline.call("DELETE", "tokens/999999", alice_token)
    assert refused.status_code == missing.status_code == 404
    assert works(helpline, bob_token)
    assert helpline.call("GET", f"accounts/{bob}/tokens", alice_token).status_code == 403


def test_an_admin_lists_and_revokes_anyones_tokens(helpline):
    admin = helpline.admin()
    alice = helpline.account()
    token = login(helpline, alice, name="stolen-laptop")
    [listed] = helpline.ok("GET", f"accounts/{alice}/tokens", admin)
    assert listed["name"] == "stolen-laptop" and listed["current"] is False
    helpline.ok("DELETE", f"tokens/{listed['id']}", admin)
    assert not works(helpline, token)
    assert helpline.ok("GET", f"accounts/{alice}/tokens", admin) == []
    assert helpline.audit("token.revoke")[0].target_id == alice


def test_changing_ones_password_ends_the_other_tokens_and_keeps_this_one(helpline):
    alice = helpline.account()
    here, elsewhere, third = login(helpline, alice), login(helpline, alice), login(helpline, alice)
    answer = helpline.ok("POST", "me/password", here, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert answer == {"ended_tokens": 2}
    assert works(helpline, here) and not works(helpline, elsewhere) and not works(helpline, third)
    assert helpline.call("POST", "auth/login", json={"username": alice, "password": PASSWORD}).status_code == 401
    login(helpline, alice, NEW_PASSWORD)
    assert [e.target_id for e in helpline.audit("account.password_change")] == [alice]
    [ended] = helpline.audit("account.tokens_ended")
    assert ended.details == {"reason": "password-change", "count": 2}


def test_a_password_change_needs_the_current_password_and_is_audited_when_refused(helpline):
    alice = helpline.account()
    here, elsewhere = login(helpline, alice), login(helpline, alice)
    response = helpline.call("POST", "me/password", here, json={"current_password": "not-my-password", "new_password": NEW_PASSWORD})
    assert response.status_code == 401 and "current password" in response.json()["error"]["message"]
    assert works(helpline, elsewhere)
    login(helpline, alice)  # the old password still works
    assert [e.target_id for e in helpline.audit("account.password_change_refused")] == [alice]


def test_a_reset_by_an_admin_ends_all_the_accounts_tokens(helpline):
    admin = helpline.admin()
    alice = helpline.account()
    token = login(helpline, alice)
    helpline.ok("PATCH", f"accounts/{alice}", admin, json={"password": NEW_PASSWORD})
    assert not works(helpline, token)
    assert helpline.audit("account.tokens_ended")[0].details == {"reason": "password-reset", "count": 1}
    assert works(helpline, admin)


def test_disable_ends_the_tokens_and_enable_does_not_bring_them_back(helpline):
    admin = helpline.admin()
    alice = helpline.account()
    token = login(helpline, alice)
    helpline.ok("PATCH", f"accounts/{alice}", admin, json={"disabled": True})
    helpline.ok("PATCH", f"accounts/{alice}", admin, json={"disabled": False})
    response = helpline.call("GET", "me", token)
    assert response.status_code == 401 and response.json()["error"]["message"] == "Your token is not valid."
    assert helpline.audit("account.tokens_ended")[0].details == {"reason": "disabled", "count": 1}
    assert works(helpline, login(helpline, alice))


@pytest.mark.parametrize("password", [" " * 12, " " * 40, "\t" * 13, "  short one  ", "aaaaaaaaaaaaaaaa", "abababababababab",
                                      "1212121212121"])
def test_weak_passwords_are_refused_everywhere_with_a_plain_message(helpline, password):
    admin = helpline.admin()
    alice = helpline.account()
    token = login(helpline, alice)
    create = helpline.call("POST", "accounts", admin, json={"username": "carol", "password": password})
    reset = helpline.call("PATCH", f"accounts/{alice}", admin, json={"password": password})
    change = helpline.call("POST", "me/password", token, json={"current_password": PASSWORD, "new_password": password})
    for response in (create, reset, change):
        assert response.status_code == 422
        message = response.json()["error"]["message"]
        assert message.startswith("A password ") and "Value error" not in message
    assert works(helpline, token)
    assert helpline.call("POST", "auth/login", json={"username": "carol", "password": password}).status_code == 401


def test_the_username_is_not_a_password(helpline):
    admin = helpline.admin()
    response = helpline.call("POST", "accounts", admin, json={"username": "frederick.lee", "password": " Frederick.Lee "})
    assert response.status_code == 422 and response.json()["error"]["message"] == "A password cannot be the username."


def test_the_policy_counts_characters_without_the_spaces_around_them():
    assert password_problem("  eleven-char  ") is not None  # 15 characters, 11 of them not spaces
    assert password_problem(" " * 6 + "abcdefghijk" + " " * 6) is not None
    assert password_problem("twelve chars") is None  # spaces inside count
    assert password_problem("abcdefghijkl") is None
    assert password_problem("hunter2 hunter2") is None
    assert password_problem(PASSWORD, "alice") is None
