"""Fresh diagnostics an engineer asked for: gathered, redacted and sent to the request's ticket.

It runs only after the PC's user approved it (agent.service.requests asks,
as for a restore): the user cannot review the bundle first as `helpline share`
lets them, so the same redaction applies and the bundle goes to the ticket
the request names, which the server checked this PC is linked to.
"""

from __future__ import annotations

from typing import Any

from agent import upload
from agent.service.requests import Handler, Report
from agent.store import AgentStore
from protocol.errors import InvalidInputError
from protocol.pc_requests import PcRequest, PcRequestKind

#: Seconds the collectors may take together.
DEADLINE = 120.0


def gather_and_send(store: AgentStore, request: PcRequest, report: Report) -> dict[str, Any]:
    """Collect, redact and bundle this PC's diagnostics, then upload the bundle to the request's ticket."""
    from agent.share import ShareRequest, prepare  # the collectors load only when a request needs them

    if request.ticket is None:
        raise InvalidInputError("Fresh diagnostics go to a ticket; this request names none.")
    state = store.require()
    share = ShareRequest(what=f"Fresh diagnostics asked for by {request.requested_by_name} ({request.requested_by}).",
                         deadline=DEADLINE, server_url=state.server_url, ticket=request.ticket)
    report(progress=0.0, detail="Gathering diagnostics.")
    prepared = prepare(share, progress=lambda name, status: report(detail=f"{name}: {status}"[:200]),
                       work_root=store.folder("work"))
    try:
        report(progress=0.5, detail=f"Sending {prepared.size} bytes to {request.ticket}.")
        entry = upload.enqueue(prepared.archive, request.ticket, state.server_url, directory=store.directory)
        bundle = upload.deliver(entry, store.signer(state), directory=store.directory,
                                progress=lambda sent, total: report(progress=0.5 + 0.5 * sent / max(total, 1)))
    finally:
        prepared.discard()
    return {"bundle_id": bundle.id, "ticket": bundle.ticket, "files": bundle.files, "size": bundle.size}


def service_handlers(store: AgentStore) -> dict[PcRequestKind, Handler]:
    """The handlers of the request kinds the agent service serves itself (beside the snapshot ones)."""
    return {PcRequestKind.DIAGNOSTICS: lambda request, report: gather_and_send(store, request, report)}
