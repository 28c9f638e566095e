"""An independent decryptor for record format v1, written from
docs/record-format.md with Python's `cryptography`: unwrap the data key with
the KEK's private key (RSA-OAEP-256), then open each sealed field with
AES-256-GCM and the documented associated data (bound to `sealedKid` after
a rewrap, else `kid`)."""

import base64
import json
import math
import re
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class Malformed(ValueError):
    """The record does not follow the format (error kind `Malformed`)."""


class Unsupported(ValueError):
    """A version, cipher or wrapping this reader does not know (`Unsupported`)."""


B64U = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def b64u(s: str) -> bytes:
    """base64url as docs/record-format.md reads it: the URL-safe alphabet
    only, padding optional (but correct if present), canonical trailing
    bits; anything else raises ValueError."""
    if not isinstance(s, str) or not B64U.fullmatch(s):
        raise Malformed("not base64url")
    bare = s.rstrip("=")
    if len(bare) % 4 == 1 or (s != bare and len(s) % 4):
        raise Malformed("not base64url: bad length or padding")
    raw = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != bare:
        raise Malformed("not base64url: non-canonical trailing bits")
    return raw


def valid_pointer(p) -> bool:
    """RFC 6901: a leading `/`, and every `~` followed by `0` or `1`."""
    return isinstance(p, str) and p.startswith("/") and re.fullmatch(r"(?:[^~]|~[01])*", p) is not None


class ShapeMismatch(ValueError):
    """A configured pointer meets a value of another shape (the writer
    refuses the event: `ProtectedFieldUnresolvable`)."""


def resolve_branches(doc, pointer):
    """Follows a configured pointer (RFC 6901, `*` = every array element)
    through `doc` along every branch: the concrete pointers found, and the
    concrete pointers of values of another shape (a string, number or
    boolean where the pointer goes deeper, an array where it names a member,
    an object where it has `*`). Absent members, indexes past the end and
    `null` on the way name nothing."""
    at, mismatches = [("", doc)], []
    for token in pointer.split("/")[1:]:
        nxt = []
        for path, v in at:
            if v is None:
                continue
            if isinstance(v, dict) and token != "*":
                name = token.replace("~1", "/").replace("~0", "~")
                if name in v:
                    nxt.append((f"{path}/{token}", v[name]))
            elif isinstance(v, list) and token == "*":
                nxt += [(f"{path}/{i}", c) for i, c in enumerate(v)]
            elif isinstance(v, list) and re.fullmatch(r"0|[1-9][0-9]*", token):
                if int(token) < len(v):
                    nxt.append((f"{path}/{token}", v[int(token)]))
            else:
                mismatches.append(path or "/")
        at = nxt
    return [p for p, _ in at], mismatches


def resolve_all(doc, pointer):
    """The writer's resolution: the concrete pointers, or ShapeMismatch."""
    found, mismatches = resolve_branches(doc, pointer)
    if mismatches:
        raise ShapeMismatch(f"{pointer} meets another shape at {mismatches[0]}")
    return found


def kid_belongs(kid: str, hsm: str, key_name: str) -> bool:
    """`{hsm}/keys/{key_name}/{version}`, the version letters and digits."""
    hsm = hsm.rstrip("/")
    for origin in {hsm, hsm.removesuffix(":443")}:
        m = re.fullmatch(re.escape(origin) + "/keys/" + re.escape(key_name) + "/([A-Za-z0-9]+)", kid)
        if m:
            return True
    return False


def parse_plaintext(raw: bytes):
    """Strict UTF-8 JSON, no duplicate member names, no NaN/Infinity."""
    def pairs(items):
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate member name")
        return dict(items)

    def constant(name):
        raise ValueError(f"{name} is not JSON")

    def number(text):
        # A number must read as a finite double (`1e400` does not).
        if math.isinf(float(text)):
            raise ValueError(f"{text} is out of range")
        return float(text) if re.search(r"[.eE]", text) else int(text)

    value = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant,
                       parse_float=number, parse_int=number)

    def no_lone_surrogates(v):
        # `\ud800` escapes a lone surrogate, which is no Unicode text.
        if isinstance(v, str):
            v.encode("utf-8")
        elif isinstance(v, dict):
            for k, c in v.items():
                no_lone_surrogates(k)
                no_lone_surrogates(c)
        elif isinstance(v, list):
            for c in v:
                no_lone_surrogates(c)

    try:
        no_lone_surrogates(value)
    except UnicodeEncodeError as e:
        raise ValueError("a lone surrogate") from e
    return value


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
    raise Malformed(f"refused: {why}")


HEADER_MEMBERS = {"v", "alg", "kid", "wrap", "dek", "fields", "sealedKid"}


def decrypt(doc: dict, private_key_pem: str | None = None, unwrap=None, hsm: str | None = None,
            key_name: str | None = None, protected: list[str] | None = None) -> dict:
    """Opens every sealed field, or raises Malformed or Unsupported (both
    ValueError) or cryptography's InvalidTag (tampered), following the
    reader's steps in docs/record-format.md. The data key is unwrapped with
    the KEK's private key, or by `unwrap(kid, wrapped) -> bytes` (e.g. the
    official Key Vault SDK calling the HSM). With `hsm` and `key_name`, the
    key ids must name a version of that key; `protected` (document-level
    pointers, `*` for array elements) are the fields the configuration
    protects, each of which must be sealed where present."""
    if "cmk" not in doc:
        # A headerless record: nothing to open, and nothing may look sealed.
        if sealed_pointers(doc):
            raise InvalidTag(f"headerless record holds a sealed value at {sealed_pointers(doc)[0]}")
        refuse("the record is not sealed")
    header = doc["cmk"]
    # Step 1: the header.
    if not isinstance(header, dict):
        refuse("cmk is not an object")
    if type(header.get("v")) is not int or header.get("v") != 1 or header.get("alg") != "A256GCM" or header.get("wrap") != "RSA-OAEP-256":
        raise Unsupported("unsupported version, cipher or wrapping")
    if set(header) - HEADER_MEMBERS:
        refuse(f"cmk has members the format does not define: {sorted(set(header) - HEADER_MEMBERS)}")
    if not isinstance(doc.get("id"), str) or not isinstance(doc.get("pk"), str):
        refuse("id and pk must be strings")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        refuse("kid is not a non-empty string")
    sealing_kid = header.get("sealedKid", kid)
    if not isinstance(sealing_kid, str) or not sealing_kid:
        refuse("sealedKid is not a non-empty string")
    fields = header.get("fields")
    if (not isinstance(fields, list) or not all(valid_pointer(f) for f in fields)
            or len(set(fields)) != len(fields)):
        refuse("fields is not a list of distinct JSON Pointers")
    if "dek" in header or fields:
        wrapped = b64u(header.get("dek"))
        if not wrapped:
            refuse("dek is empty")
    # Step 2: the key ids, the configured fields, no sealed value outside `fields`.
    if hsm is not None and not all(kid_belongs(k, hsm, key_name) for k in (kid, sealing_kid)):
        raise InvalidTag("the key id does not name a version of the configured key")
    def covered(p):
        return any(p == f or p.startswith(f + "/") for f in fields)

    for c in protected or []:
        found, mismatches = resolve_branches(doc, c)
        for p in found:
            if not covered(p):
                raise InvalidTag(f"{p} is protected by the configuration but not sealed")
        # Another shape where a field is protected (outside a sealed field):
        # the writer refuses such an event, so this record is not its own.
        for p in mismatches:
            if not covered(p):
                raise InvalidTag(f"{p} has another shape where the configuration protects {c}")
    unlisted = [p for p in sealed_pointers(doc) if p not in fields]
    if unlisted:
        raise InvalidTag(f"sealed value at {unlisted[0]} is not listed in the header")
    out = json.loads(json.dumps(doc))
    if not fields:
        del out["cmk"]
        return out
    # Step 3: the data key. A wrapped key that does not unwrap is tampered.
    if unwrap is not None:
        dek = unwrap(kid, wrapped)
    else:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        try:
            dek = key.decrypt(wrapped, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
        except ValueError as e:
            raise InvalidTag("the wrapped data key does not unwrap") from e
    if len(dek) != 32:
        refuse("the data key is not 32 bytes")
    # Step 4: each field.
    for pointer in fields:
        try:
            parent, name = resolve(out, pointer)
            sealed = parent[name]
        except (KeyError, IndexError, TypeError, ValueError):
            refuse(f"sealed field {pointer} is missing")
        if not isinstance(sealed, dict) or set(sealed) != {"cmk", "iv", "ct"} or type(sealed["cmk"]) is not int \
                or sealed["cmk"] != 1:
            refuse(f"{pointer} is not a sealed value")
        iv, ct = b64u(sealed["iv"]), b64u(sealed["ct"])
        if len(iv) != 12 or len(ct) < 16:
            refuse(f"{pointer} has a bad nonce or ciphertext length")
        plaintext = AESGCM(dek).decrypt(iv, ct, aad(doc["id"], doc["pk"], pointer, sealing_kid))
        try:
            parent[name] = parse_plaintext(plaintext)
        except ValueError as e:
            raise InvalidTag(f"{pointer}: the plaintext is not strict JSON") from e
    # Step 5.
    del out["cmk"]
    return out
