"""The Lambda emulator's own tests (no p2pmesh binary involved).

botocore is the client for execute-api and DynamoDB (its signatures must be
accepted, a wrong secret or token must be refused); the Runtime API is
driven by hand with http.client, status codes as in the RIE.
"""

import calendar
import email.parser
import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

import lambda_emu as L
from lambda_emu import Emulator, SigV4Verifier, connect_event, disconnect_event, message_event

HERE = Path(__file__).resolve().parent
PREFIX = "/2018-06-01"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for k in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture
def emu():
    e = Emulator()
    yield e
    e.close()


def client(emu, service, secret=None, token=None, endpoint=None, region=None):
    session = botocore.session.get_session()
    if endpoint is None:
        endpoint = emu.apigw_url if service == "apigatewaymanagementapi" else emu.dynamodb_url
    return session.create_client(
        service, region_name=region or emu.region, endpoint_url=endpoint,
        aws_access_key_id=emu.access_key,
        aws_secret_access_key=secret or emu.secret_key,
        aws_session_token=token or emu.token,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5,
                      proxies={}))


def error_code(exc_info):
    return exc_info.value.response["Error"]["Code"], exc_info.value.response["ResponseMetadata"]["HTTPStatusCode"]


# ============================================================ SigV4 verifier


def _headers(text):
    return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text)


def test_verifier_accepts_the_derived_post_to_connection_vector():
    """The derived vector of reference/aws.md 4.2: signature e9e874b8...,
    canonical URI /prod/%40connections/R0oXAdfD0kwCH6w%253D."""
    v = SigV4Verifier("AKIDEXAMPLE", L.DEFAULT_SECRET, "SESSIONTOKENEXAMPLE", "eu-west-1", "execute-api")
    sig = "e9e874b8ee03519a9ac3692fe969791051a4300ab7800b90066580d180791d39"
    hdrs = _headers(
        "Host: abc123defg.execute-api.eu-west-1.amazonaws.com\n"
        "X-Amz-Date: 20150830T123600Z\n"
        "X-Amz-Security-Token: SESSIONTOKENEXAMPLE\n"
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/execute-api/aws4_request, "
        "SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=%s\n\n" % sig)
    when = calendar.timegm((2015, 8, 30, 12, 36, 0))
    ok, reason, canonical = v.verify("POST", "/prod/@connections/R0oXAdfD0kwCH6w%3D", hdrs,
                                     b'{"type":"offer"}', now=when)
    assert ok, reason
    assert canonical.split("\n")[1] == "/prod/%40connections/R0oXAdfD0kwCH6w%253D"
    assert canonical.split("\n")[-1] == "290831b2caafb3b24930bfc51680ada0839e5e3ecf2e39262468f6a0221a5683"
    # the id left raw on the wire signs differently: the same signature fails
    ok, reason, canonical = v.verify("POST", "/prod/@connections/R0oXAdfD0kwCH6w=", hdrs,
                                     b'{"type":"offer"}', now=when)
    assert not ok and "signature mismatch" in reason
    assert canonical.split("\n")[1] == "/prod/%40connections/R0oXAdfD0kwCH6w%3D"
    # a changed body, a stale date, a missing token all fail
    assert not v.verify("POST", "/prod/@connections/R0oXAdfD0kwCH6w%3D", hdrs, b'{"type":"answer"}', now=when)[0]
    assert "expired" in v.verify("POST", "/prod/@connections/R0oXAdfD0kwCH6w%3D", hdrs,
                                 b'{"type":"offer"}', now=when + 3600)[1]
    v2 = SigV4Verifier("AKIDEXAMPLE", L.DEFAULT_SECRET, "OTHER", "eu-west-1", "execute-api")
    assert "Security-Token" in v2.verify("POST", "/prod/@connections/R0oXAdfD0kwCH6w%3D", hdrs,
                                         b'{"type":"offer"}', now=when)[1]
    v3 = SigV4Verifier("AKIDEXAMPLE", L.DEFAULT_SECRET, "SESSIONTOKENEXAMPLE", "us-east-1", "execute-api")
    assert "region" in v3.verify("POST", "/prod/@connections/R0oXAdfD0kwCH6w%3D", hdrs,
                                 b'{"type":"offer"}', now=when)[1]


def test_verifier_accepts_the_derived_putitem_vector():
    v = SigV4Verifier("AKIDEXAMPLE", L.DEFAULT_SECRET, None, "us-east-1", "dynamodb")
    body = (b'{"TableName": "p2pmesh-connections", "Item": {"connectionId": {"S": "R0oXAdfD0kwCH6w="}, '
            b'"room": {"S": "lobby"}, "connectedAt": {"N": "1705751697419"}, "ttl": {"N": "1705758897"}}, '
            b'"ConditionExpression": "attribute_not_exists(connectionId)"}')
    hdrs = _headers(
        "Content-Type: application/x-amz-json-1.0\n"
        "Host: dynamodb.us-east-1.amazonaws.com\n"
        "X-Amz-Target: DynamoDB_20120810.PutItem\n"
        "X-Amz-Date: 20150830T123600Z\n"
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/dynamodb/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
        "Signature=88f28adb91df8804a85937ae4ef767efd9c589397625cb25be2fb0463682f3db\n\n")
    ok, reason, _ = v.verify("POST", "/", hdrs, body, now=calendar.timegm((2015, 8, 30, 12, 36, 0)))
    assert ok, reason


# ============================================================= execute-api


def test_post_to_connection_signed_by_botocore_is_accepted(emu):
    c = client(emu, "apigatewaymanagementapi")
    c.post_to_connection(ConnectionId="AbC=", Data=b"hi")
    c.post_to_connection(ConnectionId="AbC=", Data=b'{"n":2}')
    assert emu.sig_failures == []
    assert emu.frames["AbC="] == [b"hi", b'{"n":2}']
    assert emu.posts == 2
    # wire path: "@connections" raw, the id percent-encoded
    assert emu.api_requests[0] == ("POST", "/prod/@connections/AbC%3D", "AbC=")
    assert emu._apigw_verifier.last_canonical.split("\n")[1] == "/prod/%40connections/AbC%253D"
    assert emu.violations == []
    # keep-alive: botocore reused its connection
    assert emu.connections_accepted["apigw"] == 1


def test_wrong_secret_is_refused_and_recorded(emu):
    c = client(emu, "apigatewaymanagementapi", secret="not-the-secret")
    with pytest.raises(ClientError) as ei:
        c.post_to_connection(ConnectionId="AbC=", Data=b"hi")
    assert error_code(ei) == ("ForbiddenException", 403)
    assert ei.value.response["Error"]["Message"].startswith(L.SIG_MISMATCH)
    assert len(emu.sig_failures) == 1
    method, path, reason = emu.sig_failures[0]
    assert (method, path) == ("POST", "/prod/@connections/AbC%3D")
    assert "signature mismatch" in reason
    assert emu.frames == {} and emu.posts == 0


def test_wrong_token_region_or_service_is_refused(emu):
    with pytest.raises(ClientError) as ei:
        client(emu, "apigatewaymanagementapi", token="other-token").post_to_connection(
            ConnectionId="x=", Data=b"1")
    assert error_code(ei)[1] == 403
    with pytest.raises(ClientError):
        client(emu, "apigatewaymanagementapi", region="us-east-1").post_to_connection(
            ConnectionId="x=", Data=b"1")
    reasons = [r for _, _, r in emu.sig_failures]
    assert "Security-Token" in reasons[0] and "region" in reasons[1], reasons
    assert emu.frames == {}


def test_unsigned_and_tampered_requests_are_refused(emu):
    port = int(emu.apigw_url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/prod/@connections/AbC%3D", body=b"x")
    r = conn.getresponse()
    assert r.status == 403 and json.loads(r.read()) == {"message": "Missing Authentication Token"}
    # a valid botocore signature replayed with another body
    c = client(emu, "apigatewaymanagementapi")
    c.post_to_connection(ConnectionId="AbC=", Data=b"hi")
    assert len(emu.sig_failures) == 1

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest("POST", "http://127.0.0.1:%d/prod/@connections/AbC%%3D" % port, data=b"one")
    SigV4Auth(Credentials(emu.access_key, emu.secret_key, emu.token), "execute-api", emu.region).add_auth(req)
    hdrs = dict(req.headers.items())
    conn.request("POST", "/prod/@connections/AbC%3D", body=b"two", headers=hdrs)
    r = conn.getresponse()
    assert r.status == 403, r.read()
    assert json.loads(r.read())["message"].startswith(L.SIG_MISMATCH)
    conn.request("POST", "/prod/@connections/AbC%3D", body=b"one", headers=hdrs)
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b""
    conn.close()
    assert emu.frames["AbC="] == [b"hi", b"one"]
    assert len(emu.sig_failures) == 2


def test_gone_status_delay_delete_and_get(emu):
    c = client(emu, "apigatewaymanagementapi")
    emu.gone.add("G0ne=")
    with pytest.raises(ClientError) as ei:
        c.post_to_connection(ConnectionId="G0ne=", Data=b"x")
    assert error_code(ei) == ("GoneException", 410)
    emu.status_for["Busy="] = 429
    with pytest.raises(ClientError) as ei:
        c.post_to_connection(ConnectionId="Busy=", Data=b"x")
    assert error_code(ei) == ("LimitExceededException", 429)
    assert emu.frames == {}
    assert emu.posts_to("G0ne=") == [(410, b"x")]

    emu.delay_for["Slow="] = 0.3
    t0 = time.monotonic()
    c.post_to_connection(ConnectionId="Slow=", Data=b"z")
    assert time.monotonic() - t0 >= 0.3
    assert emu.frames["Slow="] == [b"z"]

    info = c.get_connection(ConnectionId="Slow=")
    assert info["Identity"]["SourceIp"] == "198.51.100.7"
    c.delete_connection(ConnectionId="Slow=")
    assert emu.deleted == ["Slow="]
    with pytest.raises(ClientError) as ei:
        c.post_to_connection(ConnectionId="Slow=", Data=b"late")
    assert error_code(ei)[1] == 410
    assert emu.sig_failures == []


def test_wait_frames(emu):
    c = client(emu, "apigatewaymanagementapi")

    def later():
        time.sleep(0.2)
        c.post_to_connection(ConnectionId="W=", Data=b'{"type":"ping"}')
    th = threading.Thread(target=later)
    th.start()
    assert emu.wait_frames("W=", 1, timeout=3) == [{"type": "ping"}]
    th.join()
    with pytest.raises(AssertionError):
        emu.wait_frames("W=", 2, timeout=0.2)


def test_post_over_128k_is_413(emu):
    c = client(emu, "apigatewaymanagementapi")
    with pytest.raises(ClientError) as ei:
        c.post_to_connection(ConnectionId="Big=", Data=b"x" * (128 * 1024 + 1))
    assert error_code(ei)[1] == 413
    c.post_to_connection(ConnectionId="Big=", Data=b"x" * (128 * 1024))
    assert len(emu.frames["Big="][0]) == 128 * 1024


# ================================================================ DynamoDB


def test_ddb_put_get_delete_and_conditions(emu):
    d = client(emu, "dynamodb")
    t = "p2pmesh-connections"
    item = {"connectionId": {"S": "A1="}, "peerId": {"S": "aa"}, "realm": {"S": "r1"}, "ttl": {"N": "100"}}
    d.put_item(TableName=t, Item=item, ConditionExpression="attribute_not_exists(connectionId)")
    with pytest.raises(ClientError) as ei:
        d.put_item(TableName=t, Item=item, ConditionExpression="attribute_not_exists(connectionId)")
    assert error_code(ei) == ("ConditionalCheckFailedException", 400)
    got = d.get_item(TableName=t, Key={"connectionId": {"S": "A1="}}, ConsistentRead=True)
    assert got["Item"] == item
    assert "Item" not in d.get_item(TableName=t, Key={"connectionId": {"S": "nope="}})
    # put with ALL_OLD returns the previous item
    item2 = dict(item, peerId={"S": "ab"})
    assert d.put_item(TableName=t, Item=item2, ReturnValues="ALL_OLD")["Attributes"] == item
    # conditional delete on a value
    with pytest.raises(ClientError):
        d.delete_item(TableName=t, Key={"connectionId": {"S": "A1="}}, ConditionExpression="#p = :p",
                      ExpressionAttributeNames={"#p": "peerId"}, ExpressionAttributeValues={":p": {"S": "aa"}})
    old = d.delete_item(TableName=t, Key={"connectionId": {"S": "A1="}}, ConditionExpression="#p = :p",
                        ExpressionAttributeNames={"#p": "peerId"}, ExpressionAttributeValues={":p": {"S": "ab"}},
                        ReturnValues="ALL_OLD")
    assert old["Attributes"] == item2
    assert emu.item("A1=") is None
    assert d.delete_item(TableName=t, Key={"connectionId": {"S": "A1="}}, ReturnValues="ALL_OLD").get(
        "Attributes") is None
    assert [op for op, _ in emu.ddb_ops] == ["PutItem", "PutItem", "GetItem", "GetItem", "PutItem",
                                             "DeleteItem", "DeleteItem", "DeleteItem"]
    assert emu.sig_failures == [] and emu.scans == 0 and emu.violations == []


def test_ddb_update_set_remove_and_create(emu):
    d = client(emu, "dynamodb")
    t = "p2pmesh-connections"
    key = {"connectionId": {"S": "U1="}}
    # creates the item when absent
    r = d.update_item(TableName=t, Key=key, UpdateExpression="SET #t = :t, peerId = :p",
                      ExpressionAttributeNames={"#t": "ttl"},
                      ExpressionAttributeValues={":t": {"N": "10"}, ":p": {"S": "pp"}}, ReturnValues="ALL_NEW")
    assert r["Attributes"] == {"connectionId": {"S": "U1="}, "ttl": {"N": "10"}, "peerId": {"S": "pp"}}
    # a condition on an absent item fails and creates nothing
    with pytest.raises(ClientError) as ei:
        d.update_item(TableName=t, Key={"connectionId": {"S": "U2="}}, UpdateExpression="SET #t = :t",
                      ConditionExpression="attribute_exists(connectionId)",
                      ExpressionAttributeNames={"#t": "ttl"}, ExpressionAttributeValues={":t": {"N": "1"}})
    assert error_code(ei)[0] == "ConditionalCheckFailedException"
    assert emu.item("U2=") is None
    r = d.update_item(TableName=t, Key=key, UpdateExpression="SET #t = #t + :one REMOVE peerId",
                      ConditionExpression="attribute_exists(connectionId) AND #t <> :one",
                      ExpressionAttributeNames={"#t": "ttl"},
                      ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="ALL_OLD")
    assert r["Attributes"]["peerId"] == {"S": "pp"}
    assert emu.item("U1=") == {"connectionId": {"S": "U1="}, "ttl": {"N": "11"}}
    # if_not_exists keeps an existing value
    d.update_item(TableName=t, Key=key, UpdateExpression="SET #t = if_not_exists(#t, :z)",
                  ExpressionAttributeNames={"#t": "ttl"}, ExpressionAttributeValues={":z": {"N": "0"}})
    assert L.plain(emu.item("U1="))["ttl"] == 11
    # the key itself cannot be updated
    with pytest.raises(ClientError) as ei:
        d.update_item(TableName=t, Key=key, UpdateExpression="SET connectionId = :c",
                      ExpressionAttributeValues={":c": {"S": "x"}})
    assert error_code(ei)[0] == "ValidationException"


@pytest.mark.parametrize("kwargs,fragment", [
    # ttl is a reserved word: it needs a #placeholder
    ({"UpdateExpression": "SET ttl = :t", "ExpressionAttributeValues": {":t": {"N": "1"}}}, "reserved keyword"),
    ({"UpdateExpression": "SET peerId = :t", "ExpressionAttributeValues": {":t": {"N": "1"}, ":u": {"N": "2"}}},
     "unused"),
    ({"UpdateExpression": "SET #a = :t", "ExpressionAttributeNames": {"#a": "peerId", "#b": "x"},
      "ExpressionAttributeValues": {":t": {"S": "1"}}}, "unused"),
    ({"UpdateExpression": "SET peerId = :nope", "ExpressionAttributeValues": {":t": {"S": "1"}}}, "not defined"),
    # an empty string for a GSI key attribute is refused
    ({"UpdateExpression": "SET realm = :r, peerId = :p",
      "ExpressionAttributeValues": {":r": {"S": ""}, ":p": {"S": "p"}}}, "empty string"),
    ({"UpdateExpression": "SET realm = :r", "ExpressionAttributeValues": {":r": {"N": "5"}}}, "Type mismatch"),
    ({"UpdateExpression": "SET a = :r SET b = :r", "ExpressionAttributeValues": {":r": {"N": "5"}}}, "only be used once"),
])
def test_ddb_validation_errors(emu, kwargs, fragment):
    d = client(emu, "dynamodb")
    with pytest.raises(ClientError) as ei:
        d.update_item(TableName="p2pmesh-connections", Key={"connectionId": {"S": "V="}}, **kwargs)
    assert error_code(ei) == ("ValidationException", 400)
    assert fragment in ei.value.response["Error"]["Message"]
    assert emu.item("V=") is None


def _fill(d, n_r1=5):
    t = "p2pmesh-connections"
    for i in range(n_r1):
        d.put_item(TableName=t, Item={"connectionId": {"S": "c%d=" % i}, "realm": {"S": "r1"},
                                      "peerId": {"S": "p%d" % (n_r1 - i)}, "ttl": {"N": str(100 + i)}})
    d.put_item(TableName=t, Item={"connectionId": {"S": "o1="}, "realm": {"S": "r2"}, "peerId": {"S": "q"},
                                  "ttl": {"N": "1"}})
    # not joined yet: no peerId, so not in the index
    d.put_item(TableName=t, Item={"connectionId": {"S": "n1="}, "realm": {"S": "r1"}, "ttl": {"N": "1"}})


def test_ddb_query_index_pages_and_filters(emu):
    d = client(emu, "dynamodb")
    _fill(d)
    emu.page_size = 2
    q = dict(TableName="p2pmesh-connections", IndexName="realm-index", KeyConditionExpression="#r = :r",
             ExpressionAttributeNames={"#r": "realm"}, ExpressionAttributeValues={":r": {"S": "r1"}})
    peers, pages, start = [], 0, None
    for _ in range(10):
        kw = dict(q, ExclusiveStartKey=start) if start else q
        r = d.query(**kw)
        pages += 1
        assert len(r["Items"]) <= 2 and r["Count"] == len(r["Items"])
        peers += [it["peerId"]["S"] for it in r["Items"]]
        start = r.get("LastEvaluatedKey")
        if not start:
            break
        assert set(start) == {"connectionId", "realm", "peerId"}
    assert peers == ["p1", "p2", "p3", "p4", "p5"]
    assert pages == 3
    # range condition and filter
    r = d.query(TableName="p2pmesh-connections", IndexName="realm-index",
                KeyConditionExpression="#r = :r AND #p = :p",
                ExpressionAttributeNames={"#r": "realm", "#p": "peerId"},
                ExpressionAttributeValues={":r": {"S": "r1"}, ":p": {"S": "p3"}})
    assert [it["connectionId"]["S"] for it in r["Items"]] == ["c2="]
    emu.page_size = 1000
    r = d.query(TableName="p2pmesh-connections", IndexName="realm-index",
                KeyConditionExpression="#r = :r", FilterExpression="#t > :now",
                ProjectionExpression="connectionId, peerId",
                ExpressionAttributeNames={"#r": "realm", "#t": "ttl"},
                ExpressionAttributeValues={":r": {"S": "r1"}, ":now": {"N": "102"}})
    assert r["Count"] == 2 and r["ScannedCount"] == 5
    assert r["Items"] == [{"connectionId": {"S": "c4="}, "peerId": {"S": "p1"}},
                          {"connectionId": {"S": "c3="}, "peerId": {"S": "p2"}}]
    # Limit stops a page even when nothing follows, like DynamoDB
    r = d.query(Limit=5, **q)
    assert len(r["Items"]) == 5 and "LastEvaluatedKey" in r
    r2 = d.query(Limit=5, ExclusiveStartKey=r["LastEvaluatedKey"], **q)
    assert r2["Items"] == [] and "LastEvaluatedKey" not in r2
    # botocore's paginator follows LastEvaluatedKey too
    emu.page_size = 2
    got = [it["peerId"]["S"] for page in d.get_paginator("query").paginate(**q) for it in page["Items"]]
    assert got == ["p1", "p2", "p3", "p4", "p5"]
    assert emu.scans == 0


@pytest.mark.parametrize("kwargs,code", [
    ({"IndexName": "realm-index", "KeyConditionExpression": "#r = :r", "ExpressionAttributeNames": {"#r": "realm"},
      "ExpressionAttributeValues": {":r": {"S": "r1"}}, "ConsistentRead": True}, "ValidationException"),
    ({"IndexName": "realm-index", "KeyConditionExpression": "#r = :r", "ExpressionAttributeNames": {"#r": "realm"},
      "ExpressionAttributeValues": {":r": {"S": ""}}}, "ValidationException"),
    ({"IndexName": "nope-index", "KeyConditionExpression": "#r = :r", "ExpressionAttributeNames": {"#r": "realm"},
      "ExpressionAttributeValues": {":r": {"S": "r1"}}}, "ValidationException"),
    ({"IndexName": "realm-index", "KeyConditionExpression": "#p = :r", "ExpressionAttributeNames": {"#p": "peerId"},
      "ExpressionAttributeValues": {":r": {"S": "r1"}}}, "ValidationException"),
    ({"IndexName": "realm-index", "KeyConditionExpression": "#r = :r", "FilterExpression": "#p = :r",
      "ExpressionAttributeNames": {"#r": "realm", "#p": "peerId"},
      "ExpressionAttributeValues": {":r": {"S": "r1"}}}, "ValidationException"),
])
def test_ddb_query_errors(emu, kwargs, code):
    d = client(emu, "dynamodb")
    with pytest.raises(ClientError) as ei:
        d.query(TableName="p2pmesh-connections", **kwargs)
    assert error_code(ei) == (code, 400)


def test_ddb_table_query_scan_and_unknown_table(emu):
    d = client(emu, "dynamodb")
    _fill(d, 3)
    r = d.query(TableName="p2pmesh-connections", KeyConditionExpression="connectionId = :c",
                ExpressionAttributeValues={":c": {"S": "c1="}})
    assert [it["peerId"]["S"] for it in r["Items"]] == ["p2"]
    r = d.scan(TableName="p2pmesh-connections", FilterExpression="#t > :n OR attribute_not_exists(peerId)",
               ExpressionAttributeNames={"#t": "ttl"}, ExpressionAttributeValues={":n": {"N": "100"}})
    assert sorted(it["connectionId"]["S"] for it in r["Items"]) == ["c1=", "c2=", "n1="]
    assert emu.scans == 1
    with pytest.raises(ClientError) as ei:
        d.get_item(TableName="other", Key={"connectionId": {"S": "x"}})
    assert error_code(ei) == ("ResourceNotFoundException", 400)
    assert emu.expire_ttl(now=50) == ["o1=", "n1="]
    assert sorted(it["connectionId"]["S"] for it in emu.items()) == ["c0=", "c1=", "c2="]


def test_ddb_wrong_secret_and_fault_injection(emu):
    bad = client(emu, "dynamodb", secret="wrong")
    with pytest.raises(ClientError) as ei:
        bad.get_item(TableName="p2pmesh-connections", Key={"connectionId": {"S": "x"}})
    assert error_code(ei) == ("InvalidSignatureException", 400)
    assert emu.sig_failures and emu.sig_failures[0][:2] == ("POST", "/")
    assert emu.ddb_ops == []
    d = client(emu, "dynamodb")
    emu.ddb_fault("GetItem", status=400, error_type=L.DDB_ERR + "ProvisionedThroughputExceededException")
    with pytest.raises(ClientError) as ei:
        d.get_item(TableName="p2pmesh-connections", Key={"connectionId": {"S": "x"}})
    assert error_code(ei) == ("ProvisionedThroughputExceededException", 400)
    assert d.get_item(TableName="p2pmesh-connections", Key={"connectionId": {"S": "x"}}).get("Item") is None


def test_ddb_requires_protocol_headers(emu):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    port = int(emu.dynamodb_url.rsplit(":", 1)[1])
    body = b'{"TableName":"p2pmesh-connections","Key":{"connectionId":{"S":"x"}}}'
    req = AWSRequest("POST", emu.dynamodb_url + "/", data=body,
                     headers={"Content-Type": "application/json", "X-Amz-Target": "DynamoDB_20120810.GetItem"})
    SigV4Auth(Credentials(emu.access_key, emu.secret_key, emu.token), "dynamodb", emu.region).add_auth(req)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/", body=body, headers=dict(req.headers.items()))
    r = conn.getresponse()
    payload = r.read()
    assert r.status == 400 and b"SerializationException" in payload
    assert r.getheader("x-amz-crc32") and r.getheader("x-amzn-RequestId")
    conn.close()
    assert emu.violations


# ============================================================ Runtime API


class RT:
    """A hand-driven runtime client on one keep-alive connection."""

    def __init__(self, emu):
        host, port = emu.runtime_api.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=5)

    def call(self, method, path, body=None, headers=None):
        self.conn.request(method, PREFIX + path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def close(self):
        self.conn.close()


def invoke_async(emu, event, **kw):
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("r", emu.invoke(event, **kw)))
    th.start()
    return th, box


def test_runtime_next_response_error_and_headers(emu):
    rt = RT(emu)
    th, box = invoke_async(emu, {"hello": 1}, deadline_ms=1234567890123, trace_id="Root=1-abc-def;Sampled=1")
    status, h, body = rt.call("GET", "/runtime/invocation/next")
    assert emu.wait_ready(1)
    assert status == 200 and json.loads(body) == {"hello": 1}
    rid = h["lambda-runtime-aws-request-id"]
    assert h["lambda-runtime-deadline-ms"] == "1234567890123"
    assert h["lambda-runtime-invoked-function-arn"].startswith("arn:aws:lambda:eu-west-1:")
    assert h["lambda-runtime-trace-id"] == "Root=1-abc-def;Sampled=1"
    assert h["content-type"] == "application/json"
    status, _, body = rt.call("POST", "/runtime/invocation/%s/response" % rid, b'{"statusCode":200}')
    assert (status, body) == (202, b'{"status":"OK"}')
    th.join(5)
    r = box["r"]
    assert r.kind == "response" and r.json() == {"statusCode": 200} and r.request_id == rid
    # answered twice: 403; unknown id: 400
    status, _, body = rt.call("POST", "/runtime/invocation/%s/response" % rid, b"{}")
    assert status == 403 and json.loads(body)["errorType"] == "InvalidStateTransition"
    status, _, body = rt.call("POST", "/runtime/invocation/%s/response" % "0000-stale", b"{}")
    assert status == 400 and json.loads(body) == {"errorMessage": "Invalid request ID",
                                                  "errorType": "InvalidRequestID"}
    # an error with its type header; no trace header when none was given
    th, box = invoke_async(emu, b"raw bytes")
    status, h, body = rt.call("GET", "/runtime/invocation/next")
    assert body == b"raw bytes" and "lambda-runtime-trace-id" not in h
    rid = h["lambda-runtime-aws-request-id"]
    err = {"errorMessage": "boom", "errorType": "Runtime.Test", "stackTrace": []}
    status, _, body = rt.call("POST", "/runtime/invocation/%s/error" % rid, json.dumps(err),
                              {"Lambda-Runtime-Function-Error-Type": "Runtime.Test"})
    assert status == 202 and json.loads(body) == {"status": "OK"}
    th.join(5)
    r = box["r"]
    assert r.kind == "error" and r.error_type == "Runtime.Test" and r.json() == err
    rt.close()
    assert emu.connections_accepted["runtime"] == 1
    assert emu.violations == []
    assert len(emu.results) == 2


def test_runtime_response_too_large_is_413(emu):
    rt = RT(emu)
    th, box = invoke_async(emu, {"x": 1})
    _, h, _ = rt.call("GET", "/runtime/invocation/next")
    rid = h["lambda-runtime-aws-request-id"]
    status, _, body = rt.call("POST", "/runtime/invocation/%s/response" % rid, b"x" * (L.MAX_RESPONSE + 1))
    assert status == 413 and json.loads(body)["errorType"] == "RequestEntityTooLarge"
    assert "6291556" in json.loads(body)["errorMessage"]
    status, _, _ = rt.call("POST", "/runtime/invocation/%s/response" % rid, b"x" * L.MAX_RESPONSE)
    assert status == 202
    th.join(5)
    assert box["r"].kind == "response" and len(box["r"].body) == L.MAX_RESPONSE
    rt.close()


def test_runtime_init_error_state_machine():
    with Emulator() as emu:
        rt = RT(emu)
        err = {"errorMessage": "no handler", "errorType": "Runtime.NoSuchHandler"}
        status, _, body = rt.call("POST", "/runtime/init/error", json.dumps(err),
                                  {"Lambda-Runtime-Function-Error-Type": "Runtime.NoSuchHandler"})
        assert status == 202 and json.loads(body) == {"status": "OK"}
        assert emu.wait_init_error(1) == err and emu.init_error_type == "Runtime.NoSuchHandler"
        status, _, body = rt.call("POST", "/runtime/init/error", b"{}")
        assert status == 403
        status, _, body = rt.call("GET", "/runtime/invocation/next")
        assert status == 403 and json.loads(body)["errorType"] == "InvalidStateTransition"
        assert not emu.wait_ready(0.1)
        rt.close()
    with Emulator() as emu:
        rt = RT(emu)
        th, box = invoke_async(emu, {"a": 1}, timeout=2)
        _, h, _ = rt.call("GET", "/runtime/invocation/next")
        status, _, _ = rt.call("POST", "/runtime/init/error", b"{}")
        assert status == 403 and emu.init_error is None
        rt.call("POST", "/runtime/invocation/%s/response" % h["lambda-runtime-aws-request-id"], b"1")
        th.join(5)
        assert box["r"].kind == "response"
        rt.close()


def test_invoke_timeout_and_redelivery(emu):
    r = emu.invoke({"nobody": "polls"}, timeout=0.2)
    assert r.kind == "timeout" and 0.2 <= r.elapsed < 1.0
    # the timed-out, never delivered event is dropped from the queue
    th, box = invoke_async(emu, {"second": 1})
    rt = RT(emu)
    _, h, body = rt.call("GET", "/runtime/invocation/next")
    assert json.loads(body) == {"second": 1}
    # a second /next before answering gets the same event (RIE), flagged
    _, h2, body2 = rt.call("GET", "/runtime/invocation/next")
    assert h2["lambda-runtime-aws-request-id"] == h["lambda-runtime-aws-request-id"]
    assert emu.violations and "before answering" in emu.violations[0]
    rt.call("POST", "/runtime/invocation/%s/response" % h["lambda-runtime-aws-request-id"], b"{}")
    th.join(5)
    assert box["r"].kind == "response"
    rt.close()


def fake_runtime(emu, handler, n):
    """Serve n invocations with handler(event) -> (kind, body bytes)."""
    def loop():
        rt = RT(emu)
        for _ in range(n):
            _, h, body = rt.call("GET", "/runtime/invocation/next")
            kind, out = handler(json.loads(body))
            rt.call("POST", "/runtime/invocation/%s/%s" % (h["lambda-runtime-aws-request-id"], kind), out)
        rt.close()
    th = threading.Thread(target=loop, daemon=True)
    th.start()
    return th


def test_connection_tracking_with_events(emu):
    """Posting from a connection's own $connect, or after $disconnect, is a 410."""
    api = client(emu, "apigatewaymanagementapi")
    seen = []

    def handler(ev):
        ctx = ev["requestContext"]
        cid = ctx["connectionId"]
        seen.append(ctx["routeKey"])
        status = None
        if ctx["routeKey"] != "$default":
            try:
                api.post_to_connection(ConnectionId=cid, Data=b'{"during":"%s"}' % ctx["routeKey"].encode())
                status = 200
            except ClientError as e:
                status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        else:
            api.post_to_connection(ConnectionId=cid, Data=ev["body"].encode())
        code = 403 if ev.get("queryStringParameters", {}).get("deny") else 200
        return "response", json.dumps({"statusCode": code, "posted": status}).encode()

    cid, denied = L.new_connection_id(), L.new_connection_id()
    assert len(cid) == 16 and cid.endswith("=")
    th = fake_runtime(emu, handler, 4)
    r = emu.invoke(connect_event(cid, query={"room": "lobby"}, headers={"Origin": "https://good.example"}))
    assert r.json() == {"statusCode": 200, "posted": 410}
    r = emu.invoke(message_event(cid, {"type": "ping", "timestamp": 1}))
    assert emu.frames_json(cid) == [{"type": "ping", "timestamp": 1}]
    r = emu.invoke(disconnect_event(cid, 1005))
    assert r.json()["posted"] == 410
    r = emu.invoke(connect_event(denied, query={"deny": "1"}))
    assert r.json()["statusCode"] == 403
    th.join(5)
    assert denied in emu.gone and cid in emu.gone
    assert seen == ["$connect", "$default", "$disconnect", "$connect"]


def test_event_shapes():
    ev = connect_event("AbCdEf0123456g=", query={"room": "r"}, headers={"Sec-WebSocket-Protocol": "p2pmesh.v1"})
    ctx = ev["requestContext"]
    assert ctx["routeKey"] == "$connect" and ctx["eventType"] == "CONNECT"
    assert ctx["connectionId"] == "AbCdEf0123456g=" and ctx["stage"] == "prod" and ctx["apiId"] == "abcd1234"
    assert ctx["domainName"] == "abcd1234.execute-api.eu-west-1.amazonaws.com"
    assert ctx["identity"]["sourceIp"] == "198.51.100.7"
    assert ev["queryStringParameters"] == {"room": "r"}
    assert ev["multiValueQueryStringParameters"] == {"room": ["r"]}
    assert ev["headers"]["Sec-WebSocket-Protocol"] == "p2pmesh.v1"
    assert "queryStringParameters" not in connect_event("x=")
    m = message_event("x=", '{"type":"join"}')
    assert m["body"] == '{"type":"join"}' and m["requestContext"]["eventType"] == "MESSAGE"
    assert "messageId" in m["requestContext"] and "headers" not in m
    d = disconnect_event("x=", 1001, "bye")
    assert d["requestContext"]["disconnectStatusCode"] == 1001
    assert d["requestContext"]["disconnectReason"] == "bye" and "body" not in d


# ===================================================================== CLI


def test_cli_help_and_serve():
    r = subprocess.run([sys.executable, str(HERE / "lambda_emu.py"), "--help"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "serve" in r.stdout
    p = subprocess.Popen([sys.executable, str(HERE / "lambda_emu.py"), "serve", "--print-env"],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        env = json.loads(line)
        assert env["AWS_LAMBDA_RUNTIME_API"].startswith("127.0.0.1:")
        assert env["P2PMESH_SIGNALING_APIGW_ENDPOINT"].endswith("/prod")
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        p.stdout.close()
