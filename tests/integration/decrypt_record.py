"""An independent decryptor for record format v1, written from
docs/record-format.md with Python's `cryptography`: unwrap the data key with
the KEK's private key (RSA-OAEP-256), then open each sealed field with
AES-256-GCM and the documented associated data (bound to `sealedKid` after
a rewrap, else `kid`)."""

import base64
import json
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def b64u(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def aad(doc_id: str, pk: str, pointer: str, kid: str) -> bytes:
    out = b"cmk-ingest/field/v1\x00"
    for part in (doc_id, pk, pointer, kid):
        b = part.encode()
        out += struct.pack(">I", len(b)) + b
    return out


def resolve(doc, pointer):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    parent = doc
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent[p]
    return parent, (int(parts[-1]) if isinstance(parent, list) else parts[-1])


def decrypt(doc: dict, private_key_pem: str) -> dict:
    header = doc["cmk"]
    assert header["v"] == 1 and header["alg"] == "A256GCM" and header["wrap"] == "RSA-OAEP-256"
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    dek = key.decrypt(b64u(header["dek"]), padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    out = json.loads(json.dumps(doc))
    for pointer in header["fields"]:
        parent, name = resolve(out, pointer)
        sealed = parent[name]
        assert sealed["cmk"] == 1
        sealing_kid = header.get("sealedKid", header["kid"])
        plaintext = AESGCM(dek).decrypt(b64u(sealed["iv"]), b64u(sealed["ct"]), aad(doc["id"], doc["pk"], pointer, sealing_kid))
        parent[name] = json.loads(plaintext)
    del out["cmk"]
    return out
