"""The record format v1 vectors (tests/data/record-v1/vectors.json) through
the independent Python decryptor: every valid record unwraps with the test
key-encryption key to the stated data key and opens to its input; every
refused record raises. tests/record_vectors.rs runs the component's code over
the same file."""

import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from integration.decrypt_record import b64u, decrypt

DATA = Path(__file__).resolve().parents[1] / "data" / "record-v1"
VECTORS = json.loads((DATA / "vectors.json").read_text())
PEM = (DATA / VECTORS["kek"]).read_text()


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_records_unwrap_and_open(case):
    key = serialization.load_pem_private_key(PEM.encode(), password=None)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    assert key.decrypt(b64u(case["record"]["cmk"]["dek"]), oaep).hex() == case["dek"]
    assert decrypt(case["record"], PEM) == case["opened"]


@pytest.mark.parametrize("case", VECTORS["refused"], ids=lambda c: c["name"])
def test_refused_records_do_not_open(case):
    # Tampering fails authentication; a malformed or unsupported record is
    # refused before any decryption (a missing member raises KeyError).
    expected = InvalidTag if case["error"] == "Tampered" else (ValueError, KeyError)
    with pytest.raises(expected):
        decrypt(case["record"], PEM)
