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


def seal(doc, pointers, dek, kid, wrapped, nonces, raw=None):
    """Seals `pointers` (concrete); `wrapped` None: a header that seals
    nothing and carries no data key. `raw` maps a pointer to plaintext bytes
    to seal instead of its value (for refused vectors only)."""
    out = copy.deepcopy(doc)
    sealed, nonces = [], list(nonces)
    for p in pointers:
        at = slot(out, p)
        if at is None:
            continue
        parent, name = at
        nonce = bytes.fromhex(nonces.pop(0))
        plaintext = (raw or {}).get(p, None) or compact(parent[name])
        ct = AESGCM(dek).encrypt(nonce, plaintext, aad(out["id"], out["pk"], p, kid))
        parent[name] = {"cmk": 1, "iv": b64u(nonce), "ct": b64u(ct)}
        sealed.append(p)
    out["cmk"] = {"v": 1, "alg": "A256GCM", "kid": kid, "wrap": "RSA-OAEP-256", "dek": b64u(wrapped or b""),
                  "fields": sealed}
    if wrapped is None:
        assert not sealed, "a header without a data key seals nothing"
        del out["cmk"]["dek"]
    return out


def expand(doc, pointer):
    """Concrete pointers a configured pointer names: `*` is every element of
    an array; absent members, indexes past the end and null name nothing;
    ("mismatch", at) where a value has another shape."""
    at = [("", doc)]
    for token in pointer.split("/")[1:]:
        nxt = []
        for path, v in at:
            if v is None:
                continue
            if isinstance(v, dict) and token != "*":
                if unescape(token) in v:
                    nxt.append((f"{path}/{token}", v[unescape(token)]))
            elif isinstance(v, list) and token == "*":
                nxt += [(f"{path}/{i}", c) for i, c in enumerate(v)]
            elif isinstance(v, list) and token.isdigit() and (token == "0" or not token.startswith("0")):
                if int(token) < len(v):
                    nxt.append((f"{path}/{token}", v[int(token)]))
            else:
                return ("mismatch", path)
        at = nxt
    return [p for p, _ in at]


def sealed_shaped(v, at="", root=True):
    """Pointers of objects with exactly the members cmk, iv, ct."""
    if isinstance(v, dict):
        if not root and set(v) == {"cmk", "iv", "ct"}:
            return [at]
        return [p for k, c in v.items() if not (root and k == "cmk")
                for p in sealed_shaped(c, f"{at}/{k.replace('~', '~0').replace('/', '~1')}", False)]
    if isinstance(v, list):
        return [p for i, c in enumerate(v) for p in sealed_shaped(c, f"{at}/{i}", False)]
    return []


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

    # sealedKid equal to kid: no writer makes it (a rewrap back to the
    # sealing version removes it), every reader accepts it.
    same = copy.deepcopy(basic)
    same["cmk"]["sealedKid"] = KID1
    cases.append({"name": "sealedKid equal to kid", "dek": dek.hex(), "kid": KID1, "pointers": pointers,
                  "nonces": nonces, "input": basic_in, "record": same, "opened": basic_in})

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

    # A configured wildcard over an array of records, and Cosmos DB's system
    # properties, which readers leave as they are.
    dek3 = bytes(range(0x40, 0x60))
    arr_in = {
        "id": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "pk": "/topics/a", "v": 1,
        "_rid": "AAAAAA==", "_self": "dbs/x/colls/y/docs/z/", "_etag": "\"0000-0000\"", "_attachments": "attachments/",
        "_ts": 1764979200,
        "event": {"specversion": "1.0", "id": "7", "source": "/topics/a", "type": "T",
                  "data": {"items": [{"ssn": "078-05-1120", "n": 1}, {"n": 2}, {"ssn": None, "n": 3}]}},
    }
    configured = ["/event/data/items/*/ssn"]
    arr_ptrs = [p for c in configured for p in expand(arr_in, c)]
    assert arr_ptrs == ["/event/data/items/0/ssn", "/event/data/items/2/ssn"]
    arr_nonces = ["21" * 12, "22" * 12]
    arr = seal(arr_in, arr_ptrs, dek3, KID1, pub.encrypt(dek3, OAEP), arr_nonces)
    cases.append({"name": "array wildcard (null counts as present) and Cosmos DB system properties",
                  "dek": dek3.hex(), "kid": KID1, "protected": configured, "pointers": arr_ptrs, "nonces": arr_nonces,
                  "input": arr_in, "record": arr, "opened": arr_in})

    # Nothing to seal: a header without a data key (no key was made or wrapped).
    none_in = copy.deepcopy(basic_in)
    none_in["event"]["data"] = {"public": "ok"}
    none = seal(none_in, pointers, dek, KID1, None, [])
    cases.append({"name": "nothing to seal: no data key", "kid": KID1, "protected": pointers, "pointers": pointers,
                  "nonces": [], "input": none_in, "record": none, "opened": none_in})

    def broken(name, error, edit, base=None, **extra):
        rec = copy.deepcopy(base or basic)
        edit(rec)
        return {"name": name, "dek": dek.hex(), "record": rec, "error": error, **extra}

    def forged(r):
        # Plaintext where the configuration protects a field, under a header
        # that lists no field (and so carries no data key).
        r.update(copy.deepcopy({k: v for k, v in basic_in.items() if k != "cmk"}))
        r["cmk"] = {"v": 1, "alg": "A256GCM", "kid": KID1, "wrap": "RSA-OAEP-256", "fields": []}

    def forged_data(data):
        # A key-less header listing no field, over event data of another
        # shape than the configured pointers need (which the writer refuses).
        def edit(r):
            forged(r)
            r["event"]["data"] = copy.deepcopy(data)
        return edit

    def headerless(r):
        del r["cmk"]

    def trailing_bits(r):
        ct = r["event"]["data"]["ssn"]["ct"]
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        assert len(ct) % 4, "needs trailing bits"
        r["event"]["data"]["ssn"]["ct"] = ct[:-1] + alphabet[alphabet.index(ct[-1]) ^ 1]

    def rewrap_to(wrapped):
        return lambda r: r["cmk"].update(dek=b64u(wrapped))

    def junk_plaintext(raw):
        def edit(r):
            sealed = seal(basic_in, ["/event/data/name"], dek, KID1, wrapped1, ["0f" * 12],
                          raw={"/event/data/name": raw})
            r["event"]["data"]["name"] = sealed["event"]["data"]["name"]
        return edit

    corrupt = bytearray(wrapped1)
    corrupt[0] ^= 0x01

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
        # Step 2: the key the record names, and the fields the configuration protects.
        broken("kid of another HSM", "Tampered",
               lambda r: r["cmk"].update(kid=KID1.replace("contoso", "fabrikam"))),
        broken("kid of another key in the configured HSM", "Tampered",
               lambda r: r["cmk"].update(kid=KID1.replace("app-kek", "other-kek"))),
        broken("kid without a version", "Tampered", lambda r: r["cmk"].update(kid=KID1.rsplit("/", 1)[0])),
        broken("sealedKid of another HSM", "Tampered",
               lambda r: r["cmk"].update(sealedKid=KID1.replace("contoso", "fabrikam"))),
        broken("configured field in plaintext under a header listing none", "Tampered", forged,
               protected=["/event/data/name", "/event/data/ssn"]),
        broken("configured field in plaintext, header listing the others", "Tampered",
               lambda r: (r["event"]["data"].update(ssn="078-05-1120"),
                          r["cmk"].update(fields=["/event/data/name", "/event/data/visit"])),
               protected=["/event/data/name", "/event/data/ssn", "/event/data/visit"]),
        broken("wildcard: one element of another shape beside a plaintext field, header listing none", "Tampered",
               forged_data({"items": [{"ssn": "078-05-1120"}, "x"]}), protected=["/event/data/items/*/ssn"]),
        broken("data a string where a field is protected, header listing none", "Tampered",
               forged_data("ssn=078-05-1120"), protected=["/event/data/ssn"]),
        broken("sealedKid of another HSM on a record that seals nothing", "Tampered",
               lambda r: (forged_data({"public": "ok"})(r), r["cmk"].update(sealedKid=KID1.replace("contoso", "fabrikam"))),
               protected=["/event/data/ssn"]),
        broken("headerless record holding a sealed value", "Tampered", headerless),
        # Step 1: types and encodings.
        broken("cmk null", "Malformed", lambda r: r.update(cmk=None)),
        broken("cmk a list", "Malformed", lambda r: r.update(cmk=[])),
        broken("version the string \"1\"", "Unsupported", lambda r: r["cmk"].update(v="1")),
        broken("version 1.0", "Unsupported", lambda r: r["cmk"].update(v=1.0)),
        broken("version true", "Unsupported", lambda r: r["cmk"].update(v=True)),
        broken("extra header member", "Malformed", lambda r: r["cmk"].update(note="x")),
        # The version is checked before the members (a later version may define others).
        broken("format version 2 with an extra header member", "Unsupported",
               lambda r: r["cmk"].update(v=2, note="x")),
        broken("header without a version", "Unsupported", lambda r: r["cmk"].pop("v")),
        broken("id a number", "Malformed", lambda r: r.update(id=7)),
        broken("pk null", "Malformed", lambda r: r.update(pk=None)),
        broken("fields entry without a leading slash", "Malformed",
               lambda r: r["cmk"].update(fields=["event/data/name", "/event/data/ssn", "/event/data/visit"])),
        broken("fields entry with an invalid ~ escape", "Malformed",
               lambda r: r["cmk"].update(fields=["/event/data/name", "/event/data/ssn", "/event/data/visit", "/event/~2"])),
        broken("fields listed without a data key", "Malformed", lambda r: r["cmk"].pop("dek")),
        broken("dek not base64url", "Malformed", lambda r: r["cmk"].update(dek="***")),
        broken("iv in the standard alphabet", "Malformed",
               lambda r: r["event"]["data"]["ssn"].update(iv="AQEBAQEBAQEBAQE+")),
        broken("iv with wrong padding", "Malformed",
               lambda r: r["event"]["data"]["ssn"].update(iv=r["event"]["data"]["ssn"]["iv"] + "=")),
        broken("ct with non-canonical trailing bits", "Malformed", trailing_bits),
        # Step 3: the data key.
        broken("wrapped key that does not unwrap", "Tampered", rewrap_to(bytes(corrupt))),
        broken("data key of 31 bytes", "Malformed", rewrap_to(pub.encrypt(dek[:31], OAEP))),
        # Step 4: the opened plaintext.
        broken("plaintext with a duplicate member name", "Tampered", junk_plaintext(b'{"a":1,"a":2}')),
        broken("plaintext NaN", "Tampered", junk_plaintext(b"NaN")),
        broken("plaintext not UTF-8", "Tampered", junk_plaintext(b'"\xff"')),
        broken("plaintext a number out of the double range", "Tampered", junk_plaintext(b"1e400")),
        broken("plaintext an escaped lone surrogate", "Tampered", junk_plaintext(b'"\\ud800"')),
    ]
    for case in refused:
        if case["record"] is not None and isinstance(case["record"].get("cmk"), dict) and "dek" not in case["record"]["cmk"]:
            case.pop("dek")

    # Events a writer refuses (docs/record-format.md, "Writing"): the
    # configured pointers as `protected`, and the error code.
    def event_doc(data):
        d = copy.deepcopy(basic_in)
        d["event"]["data"] = data
        return d

    refused_inputs = [
        {"name": "sealed-shaped value in unprotected data", "protected": ["/event/data/ssn"],
         "input": event_doc({"note": {"cmk": 1, "iv": "AQEBAQEBAQEBAQEB", "ct": "VYKBVEjJBxCxOAZ7fUU8GbL8v12UrKpcN7Uu3eiS"}}),
         "error": "SealedShapeInEvent"},
        {"name": "sealed-shaped junk in an array", "protected": [],
         "input": event_doc({"list": [1, {"cmk": "x", "iv": None, "ct": 0}]}), "error": "SealedShapeInEvent"},
        {"name": "data a string holding the field", "protected": ["/event/data/ssn"],
         "input": event_doc('{"ssn": "078-05-1120"}'), "error": "ProtectedFieldUnresolvable"},
        {"name": "data an array of objects", "protected": ["/event/data/ssn"],
         "input": event_doc([{"ssn": "078-05-1120"}]), "error": "ProtectedFieldUnresolvable"},
        {"name": "parent of the field a string", "protected": ["/event/data/card/number"],
         "input": event_doc({"card": "number 4111"}), "error": "ProtectedFieldUnresolvable"},
        {"name": "wildcard over an object", "protected": ["/event/data/items/*/ssn"],
         "input": event_doc({"items": {"ssn": "1"}}), "error": "ProtectedFieldUnresolvable"},
    ]
    for case in refused_inputs:
        shaped = sealed_shaped(case["input"])
        unresolvable = [c for c in case["protected"] if isinstance(expand(case["input"], c), tuple)]
        assert (case["error"] == "SealedShapeInEvent") == bool(shaped) and \
            (case["error"] == "ProtectedFieldUnresolvable") == bool(unresolvable), case["name"]
    out = {
        "about": "cmk-ingest record format v1 vectors (docs/record-format.md); made by generate.py. "
                 "Hex for dek and nonces; `kek` is the test key-encryption key's file.",
        "kek": "test-kek.pem",
        "reader": {"hsm": "https://contoso.managedhsm.azure.net", "key_name": "app-kek"},
        "valid": cases,
        "refused": refused,
        "refused_inputs": refused_inputs,
    }
    (HERE / "vectors.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
