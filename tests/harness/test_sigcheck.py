"""The signature check itself: the SDK oracle reproduces the published vectors,
resource links are derived as the service derives them, and stale dates or
wrong keys are refused."""

import time
import urllib.parse

from harness.sigcheck import expected_authorization, resource_of, verify

EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="


def sig(auth: str) -> str:
    return auth.split("sig=", 1)[1]


def test_resource_links():
    assert resource_of("/") == ("", "")
    assert resource_of("/dbs") == ("dbs", "")
    assert resource_of("/dbs/db") == ("dbs", "dbs/db")
    assert resource_of("/dbs/db/colls") == ("colls", "dbs/db")
    assert resource_of("/dbs/db/colls/c/docs") == ("docs", "dbs/db/colls/c")
    assert resource_of("/dbs/db/colls/c/docs/a%20b?x=1") == ("docs", "dbs/db/colls/c/docs/a b")
    assert resource_of("/dbs/db/colls/c/pkranges") == ("pkranges", "dbs/db/colls/c")


def test_sdk_oracle_reproduces_published_vectors():
    docs_key = "dsZQi3KtZmCv1ljt3VNWNm7sQUF1y5rJfC6kv5JiwvW0EndXdDku/dkKBp8/ufDToSxLzR4y+O/0H/t4bQtVNw=="
    got = expected_authorization("GET", "/dbs/ToDoList", {"x-ms-date": "Thu, 27 Apr 2017 00:51:12 GMT"}, docs_key)
    assert sig(got) == "c09PEVJrgp2uQRkr934kFbTqhByc7TVr3OHyqlu+c+c="
    date = {"x-ms-date": "Tue, 24 Nov 2026 00:28:39 GMT"}
    assert sig(expected_authorization("POST", "/dbs/wiredb/colls/items/docs", date, EMULATOR_KEY)) == \
        "tHeGybDBswPVyKtqaEbkC+ZIWtIrYZU8b1f7FzZWl58="
    assert sig(expected_authorization("GET", "/", date, EMULATOR_KEY)) == "QXeN3ZfHbRcaC3w6pYIRh8Aqt7bdWOnAcUOpwXE0vZI="


def test_verify_accepts_a_good_signature_and_refuses_the_rest():
    now = time.time()
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
    path = "/dbs/db/colls/c/docs"
    good = urllib.parse.quote(expected_authorization("POST", path, {"x-ms-date": date}, EMULATOR_KEY), safe="")
    assert verify("POST", path, {"x-ms-date": date, "authorization": good}, EMULATOR_KEY, now) == (True, "ok")
    # Wrong verb, wrong link, wrong key, stale date, nothing at all.
    assert not verify("GET", path, {"x-ms-date": date, "authorization": good}, EMULATOR_KEY, now)[0]
    assert not verify("POST", path + "/x", {"x-ms-date": date, "authorization": good}, EMULATOR_KEY, now)[0]
    other = "b3RoZXIta2V5"
    assert not verify("POST", path, {"x-ms-date": date, "authorization": good}, other, now)[0]
    ok, reason = verify("POST", path, {"x-ms-date": date, "authorization": good}, EMULATOR_KEY, now + 16 * 60)
    assert not ok and "15-minute" in reason
    assert not verify("POST", path, {"authorization": good}, EMULATOR_KEY, now)[0]
    assert not verify("POST", path, {"x-ms-date": date}, EMULATOR_KEY, now)[0]
