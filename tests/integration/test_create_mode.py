"""Create-only writes (`cosmos_write_mode = create`), in the real runtime
against the local Cosmos server through the signature check: a redelivered
event finds its document already there, is verified against it and answered
200 without a second write (etag and timestamp unchanged); a different event
under the same document id is a conflict and the stored document stays as it
was: alone it is refused with 409; beside new events the delivery is
answered 200 with that document reported as 409, so a redelivery converges
on the same answer. Batches: one existing document fails the whole
transactional batch (207), and the component falls back to creating or
verifying each document of that group on its own."""

import copy
import uuid

import pytest

from integration.eventgrid import custom_event, document_id
from integration.test_foundation import count, post


@pytest.fixture(scope="module")
def create_app(stack):
    return stack.serve_app(name="app-create", overrides={"SPIN_VARIABLE_COSMOS_WRITE_MODE": "create"})


def stored(stack, event):
    return stack.container_client().read_item(document_id(event["topic"], event["id"]), partition_key=event["topic"])


def test_a_redelivery_is_answered_as_written_without_a_second_write(create_app, stack):
    topic = f"/topics/create-{uuid.uuid4()}"
    events = [custom_event(topic, n=i) for i in range(3)] + [custom_event(f"{topic}-lone")]
    status, _, body = post(f"{create_app.url}/events", events)
    assert status == 200, body
    assert [d["status"] for d in body["documents"]] == [201] * 4
    first = [stored(stack, e) for e in events]
    status, _, body = post(f"{create_app.url}/events", events)
    assert status == 200, body
    assert [d["status"] for d in body["documents"]] == [200] * 4  # already written
    again = [stored(stack, e) for e in events]
    assert [(d["_etag"], d["_ts"]) for d in again] == [(d["_etag"], d["_ts"]) for d in first]
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 3
    # Partly new: the batch fails on the stored document; each is then created or verified.
    more = events[:3] + [custom_event(topic, n=9)]
    status, _, body = post(f"{create_app.url}/events", more)
    assert status == 200, body
    assert [d["status"] for d in body["documents"]] == [200, 200, 200, 201]
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 4
    assert [stored(stack, e)["_etag"] for e in events[:3]] == [d["_etag"] for d in first[:3]]


@pytest.mark.parametrize("batched", [False, True], ids=["lone", "in-a-batch"])
def test_another_event_under_the_same_id_is_a_conflict_and_changes_nothing(create_app, stack, batched):
    topic = f"/topics/create-conflict-{uuid.uuid4()}"
    original = custom_event(topic, patient="original")
    assert post(f"{create_app.url}/events", [original])[0] == 200
    before = stored(stack, original)
    impostor = copy.deepcopy(original)
    impostor["data"]["patient"] = "someone else"
    delivery = [impostor, custom_event(topic, n=1)] if batched else [impostor]
    for attempt, new_status in enumerate((201, 200)):  # then redelivered
        status, _, body = post(f"{create_app.url}/events", delivery)
        if not batched:
            assert status == 409, body
            assert body["error"]["code"] == "DocumentConflict"
            assert document_id(topic, original["id"]) in body["error"]["message"]
            break
        # Mixed: the new event is stored, the conflict reported and logged.
        assert status == 200, body
        assert [(d["status"], d.get("code")) for d in body["documents"]] == [
            (409, "DocumentConflict"), (new_status, None)], body
        assert (body["accepted"], body["conflicts"]) == (1, 1)
        assert stored(stack, delivery[1])["event"]["data"] == {"n": 1}
    if batched:
        assert any('"document_conflict"' in l and document_id(topic, original["id"]) in l
                   for l in create_app.logs().splitlines())
    after = stored(stack, original)
    assert after["event"]["data"]["patient"] == "original"
    assert (after["_etag"], after["_ts"]) == (before["_etag"], before["_ts"])


def test_sealed_redelivery_matches_despite_a_fresh_data_key(stack):
    app = stack.serve_app(name="app-create-sealed", overrides={
        **stack.stage_two("client-secret"), "SPIN_VARIABLE_COSMOS_WRITE_MODE": "create"})
    topic = f"/topics/create-sealed-{uuid.uuid4()}"
    events = [custom_event(topic, patient="p-1"), custom_event(topic, patient="p-2")]
    assert post(f"{app.url}/events", events)[0] == 200
    first = [stored(stack, e) for e in events]
    status, _, body = post(f"{app.url}/events", events)  # sealed again under a new data key
    assert status == 200, body
    assert [d["status"] for d in body["documents"]] == [200, 200]
    assert [stored(stack, e)["_etag"] for e in events] == [d["_etag"] for d in first]
    changed = copy.deepcopy(events[0])
    changed["data"]["ward"] = 7  # /data is sealed: not detectable without opening it
    status, _, body = post(f"{app.url}/events", [changed])
    assert status == 200, body  # treated as the same event (see docs/cosmos.md)
    changed["subject"] = "other/subject"  # readable, so this is another event
    status, _, body = post(f"{app.url}/events", [changed])
    assert status == 409 and body["error"]["code"] == "DocumentConflict", body
    assert [stored(stack, e)["_etag"] for e in events] == [d["_etag"] for d in first]
