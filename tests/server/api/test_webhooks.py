"""Webhooks in-process: endpoints, the outbox written with the change, signed delivery with back-off by the clock,
failures visible, the deadline events once per ticket, and retention of bundles and old events."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from protocol.webhooks import EVENT_HEADER, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from server import retention, webhooks
from server.db import transaction
from server.models import Bundle, WebhookDelivery, WebhookEndpoint, WebhookEvent
from tests.server.api.test_uploads import put_chunk, start
from tests.support.bundles import write_archive

PUBLIC_URL = "https://93.184.216.34/helpline"  # a public address literal: no DNS is needed to check it


@pytest.fixture
def server_settings(server_settings):
    hooks = server_settings.webhooks.model_copy(update={"max_attempts": 4, "backoff_seconds": 30.0})
    return server_settings.model_copy(update={"webhooks": hooks, "upload_chunk_bytes": 64 * 1024})


def add(helpline, admin, events=("ticket.opened",), url=PUBLIC_URL) -> dict:
    return helpline.ok("POST", "webhooks", admin, json={"url": url, "events": list(events)})


class Receiver:
    """An HTTP receiver (an httpx mock transport): answers each POST with the next status, keeps the requests."""

    def __init__(self, *statuses: int):
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        if 300 <= status < 400:
            return httpx.Response(status, headers={"Location": "http://169.254.169.254/"})
        return httpx.Response(status, text="" if status < 300 else "\x1b[31mreceiver down\x1b[0m")


def deliver(helpline, receiver: Receiver, rng: random.Random | None = None) -> tuple[int, int, int]:
    return webhooks.deliver_due(helpline.runtime.sessions, webhooks.WebhookKey(helpline.runtime.signing_key),
                                helpline.settings.webhooks, now=helpline.clock, transport=httpx.MockTransport(receiver),
                                rng=rng or random.Random(7))


def deliveries(helpline) -> list[WebhookDelivery]:
    with helpline.db() as session:
        rows = list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
        for row in rows:
            _ = row.event.kind
        session.expunge_all()
        return rows


def test_only_admins_add_endpoints_and_the_secret_is_shown_once_and_stored_sealed(helpline):
    admin = helpline.admin()
    assert helpline.call("POST", "webhooks", helpline.token(), json={"url": PUBLIC_URL, "events": ["ticket.opened"]}).status_code == 403
    created = add(helpline, admin, events=("ticket.opened", "ticket.overdue"))
    assert created["secret"].startswith("hlw_") and created["events"] == ["ticket.opened", "ticket.overdue"]
    listed = helpline.ok("GET", "webhooks", admin)
    assert [h["id"] for h in listed] == [created["id"]] and "secret" not in listed[0]
    with helpline.db() as session:
        row = session.get(WebhookEndpoint, created["id"])
        assert created["secret"].encode() not in row.sealed_secret
        key = webhooks.WebhookKey(helpline.runtime.signing_key)
        assert key.open(row.id, row.sealed_secret) == created["secret"]
        with pytest.raises(ValueError):
            key.open(row.id + 1, row.sealed_secret)  # bound to its endpoint
    assert helpline.audit("webhook.add")[0].details["url"] == PUBLIC_URL


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "https://10.1.2.3/hook", "http://[::1]/hook",
                                 "http://169.254.169.254/latest", "ftp://93.184.216.34/x",
                                 "https://user:pw@93.184.216.34/x", "https://[::ffff:192.168.1.1]/x"],
                         ids=["loopback", "private", "loopback6", "link-local", "ftp", "credentials", "mapped-private"])
def test_urls_outside_public_http_are_refused(helpline, url):
    answer = helpline.call("POST", "webhooks", helpline.admin(), json={"url": url, "events": ["ticket.opened"]})
    assert answer.status_code == 422, answer.text


def test_private_addresses_are_allowed_when_the_setting_says_so(helpline):
    helpline.runtime.settings.webhooks.allow_private_networks = True
    assert add(helpline, helpline.admin(), url="http://127.0.0.1:9/hook")["id"]


def test_a_ticket_opened_writes_the_event_and_one_delivery_per_endpoint_that_asked(helpline, clock):
    admin = helpline.admin()
    wants = add(helpline, admin, events=("ticket.opened",))
    add(helpline, admin, events=("session.ended",))
    number = helpline.ticket(helpline.token(), title="Printer \x1b]8;;x\x07offline")
    rows = deliveries(helpline)
    assert [(d.endpoint_id, d.state, d.event.kind, d.next_attempt_at) for d in rows] == [
        (wants["id"], "pending", "ticket.opened", clock())]
    assert rows[0].event.payload["ticket"]["number"] == number
    assert rows[0].event.payload["ticket"]["title"] == "Printer \x1b]8;;x\x07offline"  # data, as it was typed


def test_a_failed_request_writes_no_event(helpline):
    add(helpline, helpline.admin())
    assert helpline.call("POST", "tickets", helpline.token(), json={"title": ""}).status_code == 422
    with helpline.db() as session:
        assert session.scalars(select(WebhookEvent)).all() == []


def test_delivery_is_signed_and_retried_with_back_off_until_it_succeeds(helpline, clock):
    admin = helpline.admin()
    secret = add(helpline, admin)["secret"]
    helpline.ticket(helpline.token())
    receiver = Receiver(500, 503, 200)
    assert deliver(helpline, receiver) == (0, 1, 0)
    first = deliveries(helpline)[0]
    delay = (first.next_attempt_at - clock()).total_seconds()
    assert 15 <= delay <= 30 and first.attempts == 1 and first.last_status == 500  # 30 s, half of it jitter
    assert deliver(helpline, receiver) == (0, 0, 0)  # not due yet: nothing sent
    clock.advance(seconds=delay)
    assert deliver(helpline, receiver) == (0, 1, 0)
    second = deliveries(helpline)[0]
    delay = (second.next_attempt_at - clock()).total_seconds()
    assert 30 <= delay <= 60  # doubled
    clock.advance(seconds=delay)
    assert deliver(helpline, receiver) == (1, 0, 0)
    done = deliveries(helpline)[0]
    assert (done.state, done.attempts, done.last_error) == ("delivered", 3, "")
    assert len(receiver.requests) == 3
    sent = receiver.requests[-1]
    assert sent.headers[EVENT_HEADER] == "ticket.opened" and sent.headers[ID_HEADER] == done.event_id
    assert {r.headers[ID_HEADER] for r in receiver.requests} == {done.event_id}  # one id across retries
    assert verify(secret, sent.headers[TIMESTAMP_HEADER], sent.content, sent.headers[SIGNATURE_HEADER])
    assert not verify("hlw_other", sent.headers[TIMESTAMP_HEADER], sent.content, sent.headers[SIGNATURE_HEADER])
    assert not verify(secret, sent.headers[TIMESTAMP_HEADER], sent.content + b" ", sent.headers[SIGNATURE_HEADER])
    body = json.loads(sent.content)
    assert body["kind"] == "ticket.opened" and body["id"] == done.event_id and "secret" not in sent.content.decode()


def test_a_delivery_that_keeps_failing_is_marked_failed_and_shown_with_the_receivers_text(helpline, clock):
    admin = helpline.admin()
    hook = add(helpline, admin)
    helpline.ticket(helpline.token())
    receiver = Receiver(500, 500, 302, 500)
    for _ in range(4):
        deliver(helpline, receiver)
        clock.advance(hours=1)
    assert len(receiver.requests) == 4  # the redirect was not followed
    failed = helpline.ok("GET", "webhooks/deliveries", admin, params={"failed": "true"})
    assert [(d["state"], d["attempts"], d["last_status"]) for d in failed] == [("failed", 4, 500)]
    assert "receiver down" in failed[0]["last_error"]
    assert helpline.ok("GET", "webhooks", admin)[0]["failed"] == 1
    assert helpline.audit("webhook.failed")[0].target_id == str(hook["id"])
    assert deliver(helpline, receiver) == (0, 0, 0)  # given up: never sent again


def test_a_redirect_counts_as_a_failed_attempt(helpline, clock):
    add(helpline, helpline.admin())
    helpline.ticket(helpline.token())
    deliver(helpline, Receiver(302))
    row = deliveries(helpline)[0]
    assert row.state == "pending" and "redirects are not followed" in row.last_error


def test_a_delivery_older_than_the_max_age_fails_without_more_attempts(helpline, clock):
    add(helpline, helpline.admin())
    helpline.ticket(helpline.token())
    clock.advance(hours=helpline.settings.webhooks.max_age_hours)
    assert deliver(helpline, Receiver(500)) == (0, 0, 1)


def test_private_addresses_are_checked_again_before_each_attempt(helpline, clock):
    helpline.runtime.settings.webhooks.allow_private_networks = True
    add(helpline, helpline.admin(), url="http://10.0.0.7/hook")
    helpline.ticket(helpline.token())
    helpline.runtime.settings.webhooks.allow_private_networks = False
    receiver = Receiver(200)
    deliver(helpline, receiver)
    assert receiver.requests == [] and "private or local address" in deliveries(helpline)[0].last_error


def test_test_and_remove(helpline):
    admin = helpline.admin()
    hook = add(helpline, admin)
    queued = helpline.ok("POST", f"webhooks/{hook['id']}/test", admin)
    assert queued["kind"] == "webhook.test" and queued["state"] == "pending"
    receiver = Receiver(200)
    assert deliver(helpline, receiver) == (1, 0, 0)
    assert receiver.requests[0].headers[EVENT_HEADER] == "webhook.test"
    helpline.ok("DELETE", f"webhooks/{hook['id']}", admin)
    assert helpline.ok("GET", "webhooks", admin) == []
    assert helpline.call("POST", f"webhooks/{hook['id']}/test", admin).status_code == 404


def test_due_soon_and_overdue_are_told_once_per_ticket(helpline, clock):
    add(helpline, helpline.admin(), events=("ticket.first_response_due_soon", "ticket.overdue"))
    engineer = helpline.token()
    number = helpline.ticket(engineer, priority="urgent")  # due in 60 minutes
    answered = helpline.ticket(engineer, priority="urgent")
    helpline.ok("PATCH", f"tickets/{answered}", engineer, json={"status": "open"})  # a first response

    def watch():
        with transaction(helpline.runtime.sessions) as session:
            return webhooks.watch_deadlines(session, helpline.settings, now=clock())

    assert watch() == (0, 0)
    clock.advance(minutes=31)
    assert watch() == (1, 0)
    assert watch() == (0, 0)
    clock.advance(minutes=30)
    assert watch() == (0, 1)
    assert watch() == (0, 0)
    kinds = [(d.event.kind, d.event.subject) for d in deliveries(helpline)]
    assert kinds == [("ticket.first_response_due_soon", number), ("ticket.overdue", number)]


def test_diagnostics_arrived_names_the_bundle_not_its_content(helpline, clock, tmp_path):
    add(helpline, helpline.admin(), events=("diagnostics.arrived",))
    number, pc, bundle = upload_bundle(helpline, tmp_path)
    (row,) = deliveries(helpline)
    data = row.event.payload
    assert data["bundle"]["id"] == bundle["id"] and data["ticket"]["number"] == number
    assert set(data["bundle"]) == {"id", "files", "size", "hostname", "agent_id"}


def upload_bundle(helpline, tmp_path):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    pc = helpline.enrolled_pc()
    code = helpline.pairing_code(engineer, number)["code"]
    helpline.ok("POST", "pair", pc, json={"code": code, **pc.key.signed("pair", "code", code)})
    data = write_archive(tmp_path / "b.tar.gz", payload=1000).read_bytes()
    upload = start(helpline, pc, number, data)
    for index in range(upload["chunks"]):
        assert put_chunk(helpline, pc, upload, index, data).status_code == 200
    return number, pc, helpline.ok("POST", f"uploads/{upload['id']}/complete", pc)


def test_retention_deletes_only_expired_bundles_with_their_blobs_and_audits(helpline, clock, tmp_path):
    helpline.runtime.settings.retention.bundles_days = 10
    _, _, old = upload_bundle(helpline, tmp_path)
    clock.advance(days=5)
    _, _, young = upload_bundle(helpline, tmp_path)
    clock.advance(days=5, seconds=1)

    def enforce():
        with transaction(helpline.runtime.sessions) as session:
            return retention.enforce(session, helpline.runtime.blobs, helpline.settings, now=clock())

    with helpline.db() as session:
        keys = {b.id: b.blob_key for b in session.scalars(select(Bundle))}
    assert enforce() == (1, 0, 0)
    assert not helpline.runtime.blobs.exists(keys[old["id"]]) and helpline.runtime.blobs.exists(keys[young["id"]])
    with helpline.db() as session:
        assert [b.id for b in session.scalars(select(Bundle))] == [young["id"]]
    assert [e.details["id"] for e in helpline.audit("bundle.expired")] == [old["id"]]
    assert enforce() == (0, 0, 0)


def test_retention_keeps_bundles_by_default_and_deletes_old_finished_webhook_events(helpline, clock, tmp_path):
    add(helpline, helpline.admin())
    engineer = helpline.token()
    delivered, retried = helpline.ticket(engineer), helpline.ticket(engineer)
    assert deliver(helpline, Receiver(200, 500)) == (1, 1, 0)  # one delivered, one still pending
    clock.advance(days=helpline.settings.retention.webhook_days, seconds=1)
    upload_bundle(helpline, tmp_path)
    with transaction(helpline.runtime.sessions) as session:
        assert retention.enforce(session, helpline.runtime.blobs, helpline.settings, now=clock()) == (0, 0, 1)
    with helpline.db() as session:
        assert len(session.scalars(select(Bundle)).all()) == 1
        left = sorted((e.kind, e.subject) for e in session.scalars(select(WebhookEvent)))
    assert ("ticket.opened", delivered) not in left and ("ticket.opened", retried) in left
    assert [kind for kind, _ in left] == ["diagnostics.arrived", "ticket.opened", "ticket.opened"]
    assert [d.state for d in deliveries(helpline)] == ["pending", "pending"]  # the old pending one and the new ticket's


def test_the_backoff_is_capped_and_jittered():
    settings = webhooks.WebhookSettings(backoff_seconds=30, backoff_max_seconds=600)
    rng = random.Random(3)
    delays = [webhooks.backoff(settings, n, rng).total_seconds() for n in range(1, 10)]
    assert all(300 <= d <= 600 for d in delays[5:])
    assert 15 <= delays[0] <= 30 and len({round(d, 3) for d in delays[5:]}) > 1
    assert timedelta(seconds=max(delays)) <= timedelta(seconds=600)


def test_a_restore_reaching_its_end_is_told_with_its_outcome_and_no_paths(helpline):
    from tests.server.api.test_pc_requests import RESTORE, linked_pc

    add(helpline, helpline.admin(), events=("restore.done",))
    engineer = helpline.token()
    pc, number = linked_pc(helpline, engineer)
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json={**RESTORE, "ticket": number})
    helpline.ok("GET", "agent/requests", pc)
    helpline.ok("POST", f"agent/requests/{made['id']}/update", pc, json={"state": "running", "progress": 0.5})
    assert deliveries(helpline) == []  # running is not an end
    helpline.ok("POST", f"agent/requests/{made['id']}/update", pc, json={"state": "done", "result": {"files_restored": 1}})
    (row,) = deliveries(helpline)
    assert row.event.payload["restore"]["outcome"] == "done" and row.event.payload["ticket"]["number"] == number
    assert "report.odt" not in json.dumps(row.event.payload)  # what was restored is the PC's business



def test_a_session_ending_is_told_once_with_its_figures(helpline):
    from tests.server.api.test_sessions import approved, setup

    add(helpline, helpline.admin(), events=("session.ended",))
    s = setup(helpline)
    sid, _, _ = approved(helpline, s)
    helpline.ok("POST", f"sessions/{sid}/end", s.engineer, json={"reason": "fixed", "bytes_to_pc": 10})
    helpline.ok("POST", f"agent/sessions/{sid}/end", s.pc, json={"reason": "closed", "bytes_from_pc": 99})
    (row,) = deliveries(helpline)
    told = row.event.payload["session"]
    assert (told["id"], told["reason"], told["bytes_to_pc"]) == (sid, "fixed", 10)


def test_the_webhook_deadline_and_retention_jobs_run_from_the_registry(helpline, clock):
    from server.jobs import JOBS

    helpline.ticket(helpline.token(), priority="urgent")
    clock.advance(minutes=31)
    jobs = {job.name: job for job in JOBS}
    # Run directly (the registry's scheduling and locks are tests/server/test_jobs.py's subject).
    runs = {name: jobs[name].run(helpline.runtime) for name in ("ticket-deadlines", "webhook-deliver", "retention")}
    assert runs == {
        "ticket-deadlines": "1 tickets' first response due soon, 0 overdue",
        "webhook-deliver": "delivered 0 webhook events, 0 to retry, 0 failed",
        "retention": "removed 0 bundles, 0 revoked PCs' snapshot repositories and 0 old webhook events past their "
                     "retention",
    }
    assert jobs["webhook-deliver"].period(helpline.settings) == helpline.settings.webhooks.deliver_seconds


def test_retention_sends_long_revoked_pcs_snapshots_to_the_trash_and_no_other(helpline, clock):
    from server.models import ResticObject, ResticRepository
    from server.restic_rest import trash

    helpline.runtime.settings.retention.revoked_snapshots_days = 7
    admin = helpline.admin()
    gone, recent, active = (helpline.enrolled_pc(f"pc-{n}") for n in ("gone", "recent", "active"))
    with helpline.db() as session:
        for pc in (gone, recent, active):
            session.add(ResticRepository(agent_id=pc.agent_id, created_at=clock(), bytes=300))
            for name in ("a" * 64, "b" * 64):
                session.add(ResticObject(agent_id=pc.agent_id, type="data", name=name, size=150, created_at=clock(),
                                         created_by="append"))
    helpline.ok("POST", f"agents/{gone.agent_id}/revoke", admin, json={"reason": "stolen"})
    clock.advance(days=7, seconds=1)
    helpline.ok("POST", f"agents/{recent.agent_id}/revoke", helpline.admin(), json={"reason": "re-imaged"})
    with transaction(helpline.runtime.sessions) as session:
        assert retention.enforce(session, helpline.runtime.blobs, helpline.settings, now=clock()) == (0, 1, 0)
    with helpline.db() as session:
        assert {r.agent_id for r in session.scalars(select(ResticRepository))} == {recent.agent_id, active.agent_id}
        trashed = {(o.agent_id, o.trashed_at) for o in session.scalars(select(ResticObject)) if o.trashed_at}
        assert trashed == {(gone.agent_id, clock())}
    assert [(e.target_id, e.details["objects"]) for e in helpline.audit("snapshots.expired")] == [(gone.agent_id, 2)]
    with transaction(helpline.runtime.sessions) as session:
        assert retention.enforce(session, helpline.runtime.blobs, helpline.settings, now=clock()) == (0, 0, 0)
        keys = trash.empty(session, helpline.settings.snapshots.trash_days, clock() + timedelta(days=8))
    assert len(keys) == 2 and all(gone.agent_id in key for key in keys)  # the trash job deletes their blobs later
