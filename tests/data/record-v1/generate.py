"""Generates the record format v1 vectors (vectors.json) from
docs/record-format.md alone, with Python's `cryptography`: fixed data keys and
nonces, data keys wrapped with RSA-OAEP-256 under the test key-encryption key
in test-kek.pem (a key made for these vectors only; it protects nothing).

RSA-OAEP is randomized, so each run wraps differently; the committed
vectors.json is one run's output and stays valid: every implementation must
unwrap `record.cmk.dek` with test-kek.pem to the stated `dek`, and seal the
`input` to exactly `record` given `dek`, `kid`, the wrapped key and `nonces`.

    python generate.py            # rewrites vectors.json (and test-kek.pem if absent)
"""

import base64
import copy
import json
import struct
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = Path(__file__).parent
KID1 = "https://contoso.managedhsm.azure.net/keys/app-kek/0123456789abcdef0123456789abcdef"
KID2 = "https://contoso.managedhsm.azure.net/keys/app-kek/fedcba9876543210fedcba9876543210"
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def aad(doc_id: str, pk: str, pointer: str, kid: str) -> bytes:
    out = b"cmk-ingest/field/v1\x00"
    for part in (doc_id, pk, pointer, kid):
        raw = part.encode()
        out += struct.pack(">I", len(raw)) + raw
    return out


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def slot(doc, pointer):
    """(parent, name) of a JSON Pointer's target, or None if absent."""
    parts = [unescape(p) for p in pointer.split("/")[1:]]
    parent = doc
    for p in parts[:-1]:
        if isinstance(parent, list):
            parent = parent[int(p)] if p.isdigit() and int(p) < len(parent) else None
        elif isinstance(parent, dict):
            parent = parent.get(p)
        else:
            return None
        if parent is None:
            return None
    last = parts[-1]
    if isinstance(parent, list):
        return (parent, int(last)) if last.isdigit() and int(last) < len(parent) else None
    return (parent, last) if isinstance(parent, dict) and last in parent else None


def compact(value) -> bytes:
    # docs/record-format.md: compact, members sorted by key, non-ASCII as is.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def seal(doc, pointers, dek, kid, wrapped, nonces):
    out = copy.deepcopy(doc)
    sealed, nonces = [], list(nonces)
    for p in pointers:
        at = slot(out, p)
        if at is None:
            continue
        parent, name = at
        nonce = bytes.fromhex(nonces.pop(0))
        ct = AESGCM(dek).encrypt(nonce, compact(parent[name]), aad(out["id"], out["pk"], p, kid))
        parent[name] = {"cmk": 1, "iv": b64u(nonce), "ct": b64u(ct)}
        sealed.append(p)
    out["cmk"] = {"v": 1, "alg": "A256GCM", "kid": kid, "wrap": "RSA-OAEP-256", "dek": b64u(wrapped), "fields": sealed}
    return out


def main() -> None:
    pem_path = HERE / "test-kek.pem"
    if not pem_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    key = serialization.load_pem_private_key(pem_path.read_bytes(), password=None)
    pub = key.public_key()

    cases = []
    dek = bytes(range(32))
    basic_in = {
        "id": "c0114e694b0dbc4eff002a3fa6e240759991be2505d38676b32d86010c21c31e", "pk": "/topics/a", "v": 1,
        "event": {"specversion": "1.0", "id": "1", "source": "/topics/a", "type": "Contoso.Records.Updated",
                  "data": {"name": "Ada Lovelace", "ssn": "078-05-1120",
                           "visit": {"ward": 7, "bed": "12a", "at": {"z": 1, "a": [True, None]}}, "public": "ok"}},
    }
    pointers = ["/event/data/name", "/event/data/ssn", "/event/data/visit", "/event/data/absent"]
    nonces = ["01" * 12, "02" * 12, "03" * 12]
    wrapped1 = pub.encrypt(dek, OAEP)
    basic = seal(basic_in, pointers, dek, KID1, wrapped1, nonces)
    cases.append({"name": "three fields, one absent pointer skipped", "dek": dek.hex(), "kid": KID1,
                  "pointers": pointers, "nonces": nonces, "input": basic_in, "record": basic,
                  "opened": basic_in})

    # After a rewrap to KID2: only kid/dek change; sealedKid names the AAD's version.
    rewrapped = copy.deepcopy(basic)
    rewrapped["cmk"].update(kid=KID2, dek=b64u(pub.encrypt(dek, OAEP)), sealedKid=KID1)
    cases.append({"name": "rewrapped to a new key version", "dek": dek.hex(), "kid": KID1, "rewrapped_kid": KID2,
                  "pointers": pointers, "nonces": nonces, "input": basic_in, "record": rewrapped,
                  "opened": basic_in})

    dek2 = bytes(range(0xa0, 0xc0))
    odd_in = {
        "id": "5d8c0f0b1d1a4b8f9f3f1b2f0d7b6c5a4e3d2c1b0a99887766554433221100ff", "pk": "Ünïcødé ✓ pk", "v": 1,
        "event": {"specversion": "1.0", "id": "ü-42", "source": "Ünïcødé ✓ pk", "type": "T",
                  "subject": "patients/ü/records",
                  "data": {"a/b": "slash in a name", "m~n": ["tilde", 1, None], "n": 3.5, "list": [{"x": "first"}, "second"],
                           "emoji": "🩺 😷", "empty": ""}},
    }
    odd_ptrs = ["/event/subject", "/event/data/a~1b", "/event/data/m~0n", "/event/data/n", "/event/data/list/0",
                "/event/data/emoji", "/event/data/empty"]
    odd_nonces = [f"{i:02x}" * 12 for i in range(0x10, 0x17)]
    odd = seal(odd_in, odd_ptrs, dek2, KID1, pub.encrypt(dek2, OAEP), odd_nonces)
    cases.append({"name": "escaped pointers, unicode, numbers, arrays and empty strings", "dek": dek2.hex(),
                  "kid": KID1, "pointers": odd_ptrs, "nonces": odd_nonces, "input": odd_in, "record": odd,
                  "opened": odd_in})

    def broken(name, error, edit):
        rec = copy.deepcopy(basic)
        edit(rec)
        return {"name": name, "dek": dek.hex(), "record": rec, "error": error}

    def swap(r):
        d = r["event"]["data"]
        d["name"], d["ssn"] = d["ssn"], d["name"]

    def truncate(r):
        r["event"]["data"]["name"]["ct"] = r["event"]["data"]["name"]["ct"][:20]

    refused = [
        broken("ciphertexts swapped between fields", "Tampered", swap),
        broken("document id changed", "Tampered", lambda r: r.update(id="0" * 64)),
        broken("partition key changed", "Tampered", lambda r: r.update(pk="/topics/b")),
        broken("kid edited without a rewrap", "Tampered", lambda r: r["cmk"].update(kid=KID2)),
        broken("sealedKid added that names another version", "Tampered", lambda r: r["cmk"].update(sealedKid=KID2)),
        broken("one bit of a ciphertext flipped", "Tampered", lambda r: r["event"]["data"]["visit"].update(
            ct=b64u(bytes([base64.urlsafe_b64decode(r["event"]["data"]["visit"]["ct"] + "==")[0] ^ 1])
                    + base64.urlsafe_b64decode(r["event"]["data"]["visit"]["ct"] + "==")[1:]))),
        broken("ciphertext shorter than the tag", "Malformed", truncate),
        broken("nonce of 8 bytes", "Malformed", lambda r: r["event"]["data"]["ssn"].update(iv=b64u(b"\x01" * 8))),
        broken("listed field missing", "Malformed", lambda r: r["event"]["data"].pop("ssn")),
        broken("sealed value with an extra member", "Malformed", lambda r: r["event"]["data"]["ssn"].update(x=1)),
        broken("fields not a list", "Malformed", lambda r: r["cmk"].update(fields="/event/data/name")),
        broken("duplicate field", "Malformed", lambda r: r["cmk"].update(fields=["/event/data/name"] * 2)),
        broken("empty kid", "Malformed", lambda r: r["cmk"].update(kid="")),
        broken("empty sealedKid", "Malformed", lambda r: r["cmk"].update(sealedKid="")),
        broken("header edited to unlist a sealed field", "Tampered",
               lambda r: r["cmk"].update(fields=["/event/data/name", "/event/data/ssn"])),
        broken("format version 2", "Unsupported", lambda r: r["cmk"].update(v=2)),
        broken("another cipher", "Unsupported", lambda r: r["cmk"].update(alg="A128GCM")),
        broken("another wrapping", "Unsupported", lambda r: r["cmk"].update(wrap="RSA1_5")),
    ]
    out = {
        "about": "cmk-ingest record format v1 vectors (docs/record-format.md); made by generate.py. "
                 "Hex for dek and nonces; `kek` is the test key-encryption key's file.",
        "kek": "test-kek.pem",
        "valid": cases,
        "refused": refused,
    }
    (HERE / "vectors.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
