"""The server-side restic repositories: restic's REST protocol over the blob store, one repository per agent.

- :mod:`server.restic_rest.credentials` issues and checks the short-lived
  HTTP Basic credentials (append, read, admin) that restic carries in its URL.
- :mod:`server.restic_rest.backend` keeps the objects: names checked against
  their content while streamed, never overwritten, deleted only as a mode allows,
  counted against the agent's quota.
- :mod:`server.restic_rest.trash` keeps what the server's prune deletes for some days.
- :mod:`server.restic_rest.prune` is the server's own `restic forget --prune`,
  fenced against the locks a hostile PC can flood or remove.
- :mod:`server.restic_rest.hooks` are the seams other parts fill: the check of
  uploaded snapshots, the escrowed password, the replacement-restore request.

docs/threat-model.md says how append-only holds against a hostile PC.
"""
