"""`helpline webhook …`: signed webhooks on ticket events, for admins (add, list, remove, test, deliveries)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import credentials, output
from cli.commands.engineer import JsonOpt
from protocol.errors import InvalidInputError
from protocol.schemas import parse_input
from protocol.untrusted import shown
from protocol.webhooks import WebhookCreate, WebhookDeliveryPublic, WebhookKind

PANEL = "For admins"
ALL_KINDS = ",".join(k.value for k in WebhookKind)

webhook_app = typer.Typer(help="Signed webhooks on ticket events, for a helpdesk or chat channel to follow.",
                          no_args_is_help=True)


def parse_kinds(text: str) -> list[WebhookKind]:
    """``ticket.opened,session.ended`` (or ``all``) as event kinds; InvalidInputError naming an unknown one."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    if words == ["all"]:
        return list(WebhookKind)
    known = {k.value: k for k in WebhookKind}
    unknown = [w for w in words if w not in known]
    if unknown or not words:
        raise InvalidInputError(f"Unknown event kind: {shown(', '.join(unknown) or text)}.",
                                hint=f"Use 'all' or some of: {ALL_KINDS}.")
    return [known[w] for w in dict.fromkeys(words)]


@webhook_app.command("add")
def webhook_add(
    url: Annotated[str, typer.Argument(metavar="URL", help="Where events are POSTed (http or https).")],
    events: Annotated[str, typer.Option("--events", metavar="KINDS",
                                        help=f"Comma-separated event kinds, or 'all': {ALL_KINDS}.")] = "all",
    description: Annotated[str, typer.Option("--description", metavar="TEXT", help="What the endpoint is, shown in the list.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Register an endpoint; prints its signing secret once (the receiver verifies every delivery with it).

    Example: helpline webhook add https://helpdesk.example.org/helpline --events ticket.opened,ticket.overdue
    """
    body = parse_input(WebhookCreate, url=url, events=parse_kinds(events), description=description)
    with credentials.connect() as client:
        hook = client.add_webhook(body)
    if json_out:
        output.print_json(hook)
        return
    output.say(f"Webhook {hook.id} posts {', '.join(hook.events)} to {output.esc(hook.url)}.")
    output.say("Its signing secret (shown this once; give it to the receiver):")
    output.say(hook.secret)


@webhook_app.command("list")
def webhook_list(json_out: JsonOpt = False) -> None:
    """List webhook endpoints with their pending and failed deliveries (never their secrets).

    Example: helpline webhook list --json
    """
    with credentials.connect() as client:
        hooks = client.webhooks()
    if json_out:
        output.print_json(hooks)
        return
    output.table(None, ["Id", "URL", "Events", "Pending", "Failed", "Added", "Description"],
                 [(h.id, h.url, ", ".join(h.events), h.pending, h.failed,
                   f"{output.local_time(h.created_at)} by {h.created_by}", h.description) for h in hooks])


@webhook_app.command("remove")
def webhook_remove(webhook_id: Annotated[int, typer.Argument(metavar="ID", help="The webhook's id, as `helpline webhook list` shows it.")]) -> None:
    """Remove an endpoint; its pending deliveries are not sent.

    Example: helpline webhook remove 3
    """
    with credentials.connect() as client:
        hook = client.remove_webhook(webhook_id)
    output.say(f"Removed webhook {hook.id} ({output.esc(hook.url)}).")


@webhook_app.command("test")
def webhook_test(
    webhook_id: Annotated[int, typer.Argument(metavar="ID", help="The webhook's id, as `helpline webhook list` shows it.")],
    json_out: JsonOpt = False,
) -> None:
    """Queue a test event (kind webhook.test) to one endpoint; the delivery job sends it within seconds.

    Example: helpline webhook test 3 && helpline webhook deliveries --webhook 3
    """
    with credentials.connect() as client:
        delivery = client.test_webhook(webhook_id)
    if json_out:
        output.print_json(delivery)
        return
    output.say(f"Queued test event {delivery.event_id} to {output.esc(delivery.url)}; "
               f"see it with `helpline webhook deliveries --webhook {delivery.endpoint_id}`.")


def _delivery_rows(deliveries: list[WebhookDeliveryPublic]):
    for d in deliveries:
        when = d.next_attempt_at if d.state.value == "pending" else d.last_attempt_at
        status = "" if d.last_status is None else str(d.last_status)
        # The last error is the receiver's answer or a connection error: untrusted text, shown as data.
        yield (d.id, d.kind, d.endpoint_id, d.state.value, d.attempts, output.local_time(when), status,
               shown(d.last_error, limit=160) if d.last_error else "")


@webhook_app.command("deliveries")
def webhook_deliveries(
    failed: Annotated[bool, typer.Option("--failed", help="Only deliveries that gave up after their last retry.")] = False,
    webhook_id: Annotated[int | None, typer.Option("--webhook", metavar="ID", help="Only this endpoint's deliveries.")] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="COUNT", min=1, max=1000, help="How many, newest first.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Show recent deliveries: state, attempts, next or last attempt, and the receiver's last answer.

    Example: helpline webhook deliveries --failed
    """
    with credentials.connect() as client:
        deliveries = client.webhook_deliveries(webhook_id=webhook_id, failed=failed, limit=limit)
    if json_out:
        output.print_json(deliveries)
        return
    output.table(None, ["Id", "Event", "Webhook", "State", "Attempts", "Next/last attempt", "HTTP", "Last error"],
                 _delivery_rows(deliveries))
