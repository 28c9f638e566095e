"""Reads a document from the local stack with the official Python SDK
(`azure-cosmos`), through the signature check, and prints it.

    read_document.py --pk PARTITION_KEY (--id DOCUMENT_ID | --event-id ID [--source SOURCE])

With --event-id the document id is derived as docs/ingest.md describes
(source defaults to the partition key, as with the default partition_key)."""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.stack import ROOT, read_profile  # noqa: E402
from integration.eventgrid import document_id  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pk", required=True, help="partition key value (by default the event's topic)")
    p.add_argument("--id", help="document id")
    p.add_argument("--event-id", help="the event's id; the document id is derived from it")
    p.add_argument("--source", help="the event's topic/source, when it is not the partition key")
    p.add_argument("--stack", default=str(ROOT / ".local-run" / "stack.json"))
    a = p.parse_args()
    if not (a.id or a.event_id):
        p.error("give --id or --event-id")
    doc_id = a.id or document_id(a.source or a.pk, a.event_id)
    info = json.loads(Path(a.stack).read_text())
    from azure.cosmos import CosmosClient

    profile = read_profile()
    client = CosmosClient(info["cosmos"], credential=profile["SPIN_VARIABLE_COSMOS_KEY"], enable_endpoint_discovery=False)
    container = client.get_database_client(info["database"]).get_container_client(info["container"])
    from azure.cosmos.exceptions import CosmosHttpResponseError

    try:
        doc = container.read_item(doc_id, partition_key=a.pk)
    except CosmosHttpResponseError as e:
        # The local server answers 500 (not 404) for a missing document.
        sys.exit(f"could not read document {doc_id} in partition {a.pk}: {e.status_code} {e.message[:200]}")
    print(json.dumps(doc, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
