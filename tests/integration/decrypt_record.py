"""An independent decryptor for record format v1, written from
docs/record-format.md with Python's `cryptography`: unwrap the data key with
the KEK's private key (RSA-OAEP-256), then open each sealed field with
AES-256-GCM and the documented associated data (bound to `sealedKid` after
a rewrap, else `kid`)."""

import base64
import json
import struct

from cryptography.exceptions import InvalidTag
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


def sealed_pointers(doc) -> list[str]:
    """Pointers of values shaped as sealed values (exactly cmk, iv, ct),
    outside the root `cmk` header."""
    out = []

    def walk(v, at, root=False):
        if isinstance(v, dict):
            if not root and set(v) == {"cmk", "iv", "ct"}:
                out.append(at)
                return
            for k, child in v.items():
                if root and k == "cmk":
                    continue
                walk(child, f"{at}/{k.replace('~', '~0').replace('/', '~1')}")
        elif isinstance(v, list):
            for i, child in enumerate(v):
                walk(child, f"{at}/{i}")

    walk(doc, "", root=True)
    return out


def refuse(why: str):
    raise ValueError(f"refused: {why}")


def decrypt(doc: dict, private_key_pem: str | None = None, unwrap=None) -> dict:
    """Opens every sealed field, or raises ValueError (and cryptography's
    InvalidTag for a failed authentication), following the reader's steps
    in docs/record-format.md. The data key is unwrapped with the KEK's
    private key, or by `unwrap(kid, wrapped) -> bytes` (e.g. the official
    Key Vault SDK calling the HSM)."""
    header = doc["cmk"]
    # Step 1: the header.
    if type(header.get("v")) is not int or header.get("v") != 1 or header.get("alg") != "A256GCM" or header.get("wrap") != "RSA-OAEP-256":
        refuse("unsupported version, cipher or wrapping")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        refuse("kid is not a non-empty string")
    sealing_kid = header.get("sealedKid", kid)
    if not isinstance(sealing_kid, str) or not sealing_kid:
        refuse("sealedKid is not a non-empty string")
    fields = header.get("fields")
    if (not isinstance(fields, list) or not all(isinstance(f, str) and f.startswith("/") for f in fields)
            or len(set(fields)) != len(fields)):
        refuse("fields is not a list of distinct JSON Pointers")
    # Step 2 (of what this reader can check): no sealed value outside `fields`.
    unlisted = [p for p in sealed_pointers(doc) if p not in fields]
    if unlisted:
        raise InvalidTag(f"sealed value at {unlisted[0]} is not listed in the header")
    # Step 3: the data key.
    if unwrap is not None:
        dek = unwrap(kid, b64u(header["dek"]))
    else:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        dek = key.decrypt(b64u(header["dek"]), padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    if len(dek) != 32:
        refuse("the data key is not 32 bytes")
    # Step 4: each field.
    out = json.loads(json.dumps(doc))
    for pointer in fields:
        parent, name = resolve(out, pointer)
        sealed = parent[name]
        if not isinstance(sealed, dict) or set(sealed) != {"cmk", "iv", "ct"} or type(sealed["cmk"]) is not int \
                or sealed["cmk"] != 1:
            refuse(f"{pointer} is not a sealed value")
        iv, ct = b64u(sealed["iv"]), b64u(sealed["ct"])
        if len(iv) != 12 or len(ct) < 16:
            refuse(f"{pointer} has a bad nonce or ciphertext length")
        plaintext = AESGCM(dek).decrypt(iv, ct, aad(doc["id"], doc["pk"], pointer, sealing_kid))
        parent[name] = json.loads(plaintext)
    # Step 5.
    del out["cmk"]
    return out
