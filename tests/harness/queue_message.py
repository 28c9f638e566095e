"""Puts one message on the local stack's queue with the official Azure
Storage SDK (`azure-storage-queue`), as a publisher or an Event Grid
Storage-queue subscription would; the queue bridge that scripts/local starts
forwards it to the component's `POST /queue`.

    queue_message.py [--stack .local-run/stack.json] [--queue events] 'MESSAGE TEXT'

The text is stored as given (raw JSON: an Event Grid event, a batch of
them, or a CloudEvent); prints the message id."""

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", help="the message text, e.g. an Event Grid event as JSON")
    p.add_argument("--stack", default=str(ROOT / ".local-run" / "stack.json"))
    p.add_argument("--queue", help="queue name (default: the one the bridge polls)")
    a = p.parse_args()
    info = json.loads(Path(a.stack).read_text())
    from azure.storage.queue import QueueClient

    queue = a.queue or info.get("bridge_queue") or "events"
    client = QueueClient.from_connection_string(info["queue_connection_string"], queue)
    sent = client.send_message(a.text)
    print(json.dumps({"queue": queue, "messageId": sent.id}))


if __name__ == "__main__":
    main()
