"""The record format v1 vectors (tests/data/record-v1/vectors.json) through
the independent Python decryptor: every valid record unwraps with the test
key-encryption key to the stated data key and opens to its input; every
refused record raises the documented kind of error, with the vectors'
reader settings (the configured HSM and key, and the protected fields a
case names). tests/record_vectors.rs runs the component's code over the
same file."""

import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from integration.decrypt_record import (Malformed, ShapeMismatch, Unsupported, b64u, decrypt, resolve_all,
                                        sealed_pointers)

DATA = Path(__file__).resolve().parents[1] / "data" / "record-v1"
VECTORS = json.loads((DATA / "vectors.json").read_text())
PEM = (DATA / VECTORS["kek"]).read_text()
READER = VECTORS["reader"]
KINDS = {"Tampered": InvalidTag, "Malformed": Malformed, "Unsupported": Unsupported}


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_records_unwrap_and_open(case):
    key = serialization.load_pem_private_key(PEM.encode(), password=None)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    if "dek" in case["record"]["cmk"]:
        assert key.decrypt(b64u(case["record"]["cmk"]["dek"]), oaep).hex() == case["dek"]
    else:
        assert case["record"]["cmk"]["fields"] == []
    if "protected" in case:
        assert [p for c in case["protected"] for p in resolve_all(case["input"], c)] == \
            [p for p in case["pointers"] if resolve_all(case["input"], p)]
    assert decrypt(case["record"], PEM, protected=case.get("protected"), **READER) == case["opened"]


@pytest.mark.parametrize("case", VECTORS["refused"], ids=lambda c: c["name"])
def test_refused_records_do_not_open(case):
    with pytest.raises(KINDS[case["error"]]) as e:
        decrypt(case["record"], PEM, protected=case.get("protected"), **READER)
    # Malformed and Unsupported are distinct kinds.
    assert type(e.value) is KINDS[case["error"]] or case["error"] == "Tampered", repr(e.value)


@pytest.mark.parametrize("case", VECTORS["refused_inputs"], ids=lambda c: c["name"])
def test_refused_inputs_are_recognised(case):
    """The writer's checks, in its order: a sealed-shaped value first, then
    each configured pointer resolved (another shape raises)."""
    if sealed_pointers(case["input"]):
        got = "SealedShapeInEvent"
    else:
        got = None
        for pointer in case["protected"]:
            try:
                resolve_all(case["input"], pointer)
            except ShapeMismatch:
                got = "ProtectedFieldUnresolvable"
                break
    assert got == case["error"]
