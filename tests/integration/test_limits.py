"""Cosmos DB's 2 MB document limit, checked by the component before anything
is sent: with the body limit raised above 2 MB, an event whose document
would exceed 2 MB is refused with 413 `DocumentTooLarge`; the signature
check in front of the Cosmos server sees no request and nothing is
written, not even the delivery's other, small events."""

import uuid

from integration.eventgrid import custom_event
from integration.test_foundation import count, post

MAX_DOCUMENT_BYTES = 2 * 1024 * 1024


def test_a_document_over_2_mb_is_refused_before_sending(stack):
    app = stack.serve_app(name="app-big-bodies", overrides={"SPIN_VARIABLE_MAX_BODY_BYTES": str(6 * 1024 * 1024)})
    topic = f"/topics/too-large-{uuid.uuid4()}"
    big = custom_event(topic, blob="x" * (MAX_DOCUMENT_BYTES + 1024))
    for delivery in ([big], [custom_event(topic), big, custom_event(f"{topic}-other")]):
        before = stack.sigcheck_stats()
        status, _, body = post(f"{app.url}/events", delivery)
        assert status == 413, body
        assert body["error"]["code"] in ("DocumentTooLarge", "BatchTooLarge")
        assert "2097152" in body["error"]["message"] or "2 MB" in body["error"]["message"]
        assert stack.sigcheck_stats()["total"] == before["total"], "nothing may reach Cosmos DB"
    assert count(stack, "c.pk = @pk OR c.pk = @o",
                 [{"name": "@pk", "value": topic}, {"name": "@o", "value": f"{topic}-other"}]) == 0
    # Just under the limit is written.
    ok = custom_event(topic, blob="x" * (MAX_DOCUMENT_BYTES - 4096))
    status, _, body = post(f"{app.url}/events", [ok])
    assert status == 200, body
