"""Run moto's S3 server with multipart completion made atomic, as S3 itself is.

moto 5 publishes the object that completes a multipart upload first and gives it
the upload's metadata a moment later, so a HEAD in between sees an object without
its ``x-amz-meta-*`` fields. S3 never shows that state; a test that reads while
an object is overwritten would fail on moto's window instead of on Helpline.
Here an object made from a multipart upload carries the upload's metadata from
the moment it exists. If moto's internals change shape the server runs as it
comes, and says so in its log.

Usage: ``python -m tests.support.moto_main --host 127.0.0.1 --port N``.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any


def _make_multipart_metadata_atomic() -> bool:
    try:
        from moto.s3.models import FakeKey, S3Backend
    except ImportError:
        return False
    if getattr(S3Backend.complete_multipart_upload, "_helpline_atomic", False):
        return True
    completing = threading.local()  # set while this thread completes a multipart upload
    original_init, original_complete = FakeKey.__init__, S3Backend.complete_multipart_upload

    @functools.wraps(original_init)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        metadata = getattr(kwargs.get("multipart"), "metadata", None)
        if getattr(completing, "active", False) and metadata:
            self.set_metadata(dict(metadata))

    @functools.wraps(original_complete)
    def complete(self: Any, *args: Any, **kwargs: Any) -> Any:
        completing.active = True
        try:
            return original_complete(self, *args, **kwargs)
        finally:
            completing.active = False

    complete._helpline_atomic = True  # type: ignore[attr-defined]
    FakeKey.__init__ = init  # type: ignore[method-assign]
    S3Backend.complete_multipart_upload = complete  # type: ignore[method-assign]
    return True


def main(argv: list[str] | None = None) -> None:
    if not _make_multipart_metadata_atomic():
        print("helpline tests: moto's FakeKey not found; multipart metadata is not atomic", file=sys.stderr)
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main()
