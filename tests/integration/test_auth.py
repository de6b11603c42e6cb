"""signaling.auth=jwt and GET /ice, against the real binary.

Tokens are made here with the standard library (base64, hmac, hashlib),
one of them with the openssl CLI; TURN credentials are recomputed with
Python's hmac and checked against `openssl dgst`.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import time

import pytest

from helpers import (
    assert_silent,
    close_all,
    free_port,
    http_get,
    join,
    raw_handshake,
    recv_json,
    run_cli,
    ws_connect,
)

SECRET = "integration-test-secret"
TURN_SECRET = "coturn-static-auth-secret"
JWT_FLAGS = ("--signaling.auth=jwt", "--jwt.secret=" + SECRET)


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims, key=SECRET, header=None, digest=hashlib.sha256):
    """A compact JWS of claims: HS256 unless header and digest say else."""
    h = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    signing_input = "%s.%s" % (b64url(json.dumps(h).encode()),
                               b64url(json.dumps(claims).encode()))
    mac = hmac.new(key.encode(), signing_input.encode(), digest).digest()
    return signing_input + "." + b64url(mac)


def token_for(sub, ttl=600, **extra):
    claims = {"sub": sub, "exp": int(time.time()) + ttl}
    claims.update(extra)
    return make_jwt(claims)


def jwt_server(server_factory, *flags, env=None):
    return server_factory(*(JWT_FLAGS + flags), env=env)


def upgrade_status(server, path="/", headers=None):
    """Status and headers of an upgrade done by hand (socket closed)."""
    resp, sock, _, _ = raw_handshake(server.port, path, headers)
    sock.close()
    return resp


def refusals(server):
    return [l for l in server.logs() if l.get("event") == "auth_refused"]


def wait_refusals(server, n, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = refusals(server)
        if len(got) >= n:
            return got
        time.sleep(0.05)
    raise AssertionError("expected %d auth_refused lines, got %r" % (n, refusals(server)))


def one_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    assert len(lines) == 1, "expected exactly one stderr line, got %r" % text
    return lines[0]


# ------------------------------------------------------- upgrade refusals


def test_upgrade_without_token_is_401(server_factory):
    server = jwt_server(server_factory)
    resp = upgrade_status(server)
    assert resp.status == 401, resp
    assert resp.headers.get("www-authenticate") == "Bearer", resp
    # every dialect's upgrade is checked: mailbox push and PeerJS paths too
    assert upgrade_status(server, "/ws/" + "ab" * 16).status == 401
    assert upgrade_status(server, "/peerjs?key=peerjs&id=a&token=t").status == 401
    lines = wait_refusals(server, 3)
    assert lines[0]["level"] == "info"
    assert lines[0]["reason"] == "no token", lines[0]
    assert lines[0]["ip"] == "127.0.0.1", lines[0]


@pytest.mark.parametrize("name,token,reason", [
    ("other key", make_jwt({"sub": "alice"}, key="not-the-secret"),
     "signature is wrong"),
    ("alg none", "%s.%s." % (b64url(b'{"alg":"none"}'), b64url(b'{"sub":"alice"}')),
     "alg is not HS256"),
    # a correct HMAC-SHA512 under the right key: still refused
    ("HS512", make_jwt({"sub": "alice"}, header={"alg": "HS512"},
                       digest=hashlib.sha512), "alg is not HS256"),
    # an HS256 MAC under a header claiming RS256 (algorithm confusion)
    ("RS256", make_jwt({"sub": "alice"}, header={"alg": "RS256"}),
     "alg is not HS256"),
    ("not a jwt", "hello", "three dot-separated parts"),
    ("no sub", make_jwt({"name": "alice"}), "no sub"),
    ("sub too long", make_jwt({"sub": "a" * 129}), "sub is longer than 128"),
])
def test_bad_tokens_are_401(server_factory, name, token, reason):
    server = jwt_server(server_factory)
    resp = upgrade_status(server, "/?token=" + token)
    assert resp.status == 401, (name, resp)
    line = wait_refusals(server, 1)[0]
    assert reason in line["reason"], (name, line)
    assert token not in server.stdout_text() + server.stderr_text()


def test_tampered_payload_is_401(server_factory):
    server = jwt_server(server_factory)
    h, _, sig = token_for("alice").split(".")
    forged = "%s.%s.%s" % (h, b64url(json.dumps(
        {"sub": "admin", "exp": int(time.time()) + 600}).encode()), sig)
    assert upgrade_status(server, "/?token=" + forged).status == 401


def test_expired_and_not_yet_valid_are_401(server_factory):
    server = jwt_server(server_factory)
    now = int(time.time())
    assert upgrade_status(server, "/?token=" + token_for("a", ttl=-120)).status == 401
    assert upgrade_status(
        server, "/?token=" + make_jwt({"sub": "a", "nbf": now + 3600})).status == 401
    reasons = [l["reason"] for l in wait_refusals(server, 2)]
    assert reasons == ["token expired", "token not valid yet (nbf)"], reasons
    # within the leeway (30 s of clock skew) both are still fine
    assert upgrade_status(server, "/?token=" + token_for("a", ttl=-5)).status == 101
    assert upgrade_status(
        server, "/?token=" + make_jwt({"sub": "a", "nbf": now + 5})).status == 101
    # exp is optional
    assert upgrade_status(server, "/?token=" + make_jwt({"sub": "a"})).status == 101


# ------------------------------------------------------------- accepted


def test_query_token_joins_as_its_sub(server_factory):
    server = jwt_server(server_factory)
    url = server.ws_url
    alice_token = token_for("alice")

    async def go():
        bob, boot = await join(url + "?token=" + token_for("bob"), "bob")
        assert boot["peers"] == []
        alice, boot = await join(url + "?token=" + alice_token, "alice")
        try:
            assert [p["id"] for p in boot["peers"]] == ["bob"]
            assert await recv_json(bob) == {"type": "peer_joined", "peerId": "alice"}
        finally:
            await close_all([alice, bob])

    run(go())
    assert alice_token.split(".")[2] not in server.stdout_text()


def test_join_with_another_id_is_refused(server_factory):
    server = jwt_server(server_factory)

    async def go():
        watcher, _ = await join(server.ws_url + "?token=" + token_for("w"), "w")
        ws = await ws_connect(server.ws_url + "?token=" + token_for("alice"))
        try:
            await ws.send(json.dumps({"type": "join", "peerId": "mallory"}))
            assert await recv_json(ws) == {
                "type": "error", "message": "peerId does not match your token."}
            await assert_silent(watcher, 0.3)  # nobody was told of mallory
            # the socket stays usable for the id the token names
            await ws.send(json.dumps({"type": "join", "peerId": "alice"}))
            boot = await recv_json(ws)
            assert boot["type"] == "bootstrap_peers", boot
            assert await recv_json(watcher) == {"type": "peer_joined", "peerId": "alice"}
        finally:
            await close_all([ws, watcher])

    run(go())


@pytest.mark.parametrize("offered,echoed", [
    (["jwt", "TOKEN"], "jwt"),
    (["TOKEN", "jwt"], "jwt"),
    (["y-webrtc.v1", "TOKEN"], "y-webrtc.v1"),
    (["TOKEN"], "TOKEN"),
])
def test_token_as_subprotocol_echoes_one_offered(server_factory, offered, echoed):
    server = jwt_server(server_factory)
    token = token_for("carol")
    offered = [token if p == "TOKEN" else p for p in offered]
    echoed = token if echoed == "TOKEN" else echoed

    async def go():
        # python-websockets fails the handshake unless one offered value
        # comes back, as browsers do
        ws = await ws_connect(server.ws_url, subprotocols=offered)
        try:
            assert ws.subprotocol == echoed
            await ws.send(json.dumps({"type": "join", "peerId": "dave"}))
            assert (await recv_json(ws))["message"] == "peerId does not match your token."
            await ws.send(json.dumps({"type": "join", "peerId": "carol"}))
            assert (await recv_json(ws))["type"] == "bootstrap_peers"
        finally:
            await close_all([ws])

    run(go())
    resp = upgrade_status(server, headers={"Sec-WebSocket-Protocol": ", ".join(offered)})
    assert resp.status == 101, resp
    assert resp.headers["sec-websocket-protocol"] == echoed


def test_bad_token_as_subprotocol_is_401(server_factory):
    server = jwt_server(server_factory)
    bad = make_jwt({"sub": "carol"}, key="wrong")
    resp = upgrade_status(server, headers={"Sec-WebSocket-Protocol": "jwt, " + bad})
    assert resp.status == 401, resp
    # offered values that are not JWTs are not a token
    resp = upgrade_status(server, headers={"Sec-WebSocket-Protocol": "jwt, chat"})
    assert resp.status == 401, resp
    assert [l["reason"] for l in wait_refusals(server, 2)] == [
        "token signature is wrong", "no token"]


def test_authorization_bearer(server_factory):
    server = jwt_server(server_factory)

    async def go():
        ws = await ws_connect(server.ws_url, extra_headers={
            "Authorization": "Bearer " + token_for("erin")})
        try:
            assert ws.subprotocol is None
            await ws.send(json.dumps({"type": "join", "peerId": "erin"}))
            assert (await recv_json(ws))["type"] == "bootstrap_peers"
        finally:
            await close_all([ws])

    run(go())
    resp = upgrade_status(server, headers={"Authorization": "Basic ZXJpbjpwdw=="})
    assert resp.status == 401, resp


def test_jwt_query_name_and_peerjs_path(server_factory):
    server = jwt_server(server_factory)
    t = token_for("frank")
    assert upgrade_status(server, "/?jwt=" + t).status == 101
    # ?token= wins over ?jwt= on the p2pmesh path
    assert upgrade_status(server, "/?token=bad&jwt=" + t).status == 401
    # PeerJS's own token is a random string: only jwt= carries the JWT there
    peerjs = "/peerjs?key=peerjs&id=frank"
    assert upgrade_status(server, peerjs + "&token=" + t).status == 401
    assert upgrade_status(server, peerjs + "&token=r4nd0m&jwt=" + t).status == 101


def test_token_made_with_openssl_cli(server_factory):
    server = jwt_server(server_factory)
    signing_input = b64url(b'{"alg":"HS256"}') + "." + b64url(
        json.dumps({"sub": "grace", "exp": int(time.time()) + 60}).encode())
    mac = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", SECRET, "-binary"],
        input=signing_input.encode(), capture_output=True, check=True).stdout
    assert upgrade_status(server, "/?token=%s.%s" % (signing_input, b64url(mac))).status == 101


@pytest.mark.parametrize("name", ["P2PMESH_JWT_SECRET", "JWT_SECRET"])
def test_secret_from_environment(server_factory, name):
    server = server_factory("--signaling.auth=jwt", env={name: SECRET})
    assert upgrade_status(server, "/?token=" + token_for("h")).status == 101
    assert upgrade_status(server, "/?token=" + make_jwt({"sub": "h"}, key="x")).status == 401


def test_startup_refuses_jwt_without_secret():
    r = run_cli("--role=signaling", "--addr=127.0.0.1", "--port=%d" % free_port(),
                "--signaling.auth=jwt")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "signaling.auth=jwt needs jwt.secret" in one_line(r.stderr)


def test_auth_none_takes_no_token(server):
    async def go():
        ws, _ = await join(server.ws_url, "anyone")
        await close_all([ws])

    run(go())
    assert upgrade_status(server, "/?token=garbage").status == 101
    assert refusals(server) == []


# ------------------------------------------------------------------ /ice


def turn_credential(secret, username):
    mine = base64.b64encode(hmac.new(secret.encode(), username.encode(),
                                     hashlib.sha1).digest()).decode()
    openssl = subprocess.run(
        ["openssl", "dgst", "-sha1", "-hmac", secret, "-binary"],
        input=username.encode(), capture_output=True, check=True).stdout
    assert base64.b64encode(openssl).decode() == mine
    return mine


def check_turn_entry(entry, urls, user, ttl_s):
    assert set(entry) == {"urls", "username", "credential"}, entry
    assert entry["urls"] == urls
    expiry, _, name = entry["username"].partition(":")
    assert name == user, entry
    assert abs(int(expiry) - (time.time() + ttl_s)) < 5, entry
    assert entry["credential"] == turn_credential(TURN_SECRET, entry["username"])


def test_ice_stun_only(server_factory):
    server = server_factory("--signaling.stun_urls= stun:stun.example.org:3478 ,"
                            "stuns:stun.example.org:5349,")
    r = http_get(server.port, "/ice")
    assert r.status == 200, r
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {"iceServers": [{"urls": [
        "stun:stun.example.org:3478", "stuns:stun.example.org:5349"]}]}


def test_ice_nothing_configured(server):
    r = http_get(server.port, "/ice")
    assert r.status == 200, r
    assert r.json() == {"iceServers": []}


def test_ice_turn_credentials(server_factory):
    server = server_factory(
        "--signaling.stun_urls=stun:s.example.org",
        "--signaling.turn_urls=turn:t.example.org:3478?transport=udp, turns:t.example.org:5349",
        "--signaling.turn_ttl=1h", env={"P2PMESH_SIGNALING_TURN_SECRET": TURN_SECRET})
    turn_urls = ["turn:t.example.org:3478?transport=udp", "turns:t.example.org:5349"]
    body = http_get(server.port, "/ice").json()
    assert body["ttl"] == 3600
    stun, turn = body["iceServers"]
    assert stun == {"urls": ["stun:s.example.org"]}
    check_turn_entry(turn, turn_urls, "p2pmesh", 3600)
    turn = http_get(server.port, "/ice?user=bob").json()["iceServers"][1]
    check_turn_entry(turn, turn_urls, "bob", 3600)
    # user is sanitised: nothing that could split or confuse the username
    turn = http_get(server.port, "/ice?user=b%3Ao+b%21%0A").json()["iceServers"][1]
    check_turn_entry(turn, turn_urls, "bob", 3600)
    assert http_get(server.port, "/ice?user=" + "u" * 129).status == 400
    assert TURN_SECRET not in server.stdout_text() + server.stderr_text()


def test_ice_with_jwt_auth(server_factory):
    server = jwt_server(server_factory, "--signaling.turn_urls=turn:t.example.org",
                        "--signaling.turn_secret=" + TURN_SECRET)
    r = http_get(server.port, "/ice")
    assert r.status == 401, r
    assert r.headers["www-authenticate"] == "Bearer"
    assert http_get(server.port, "/ice?token=" + token_for("x", ttl=-600)).status == 401
    assert [l["reason"] for l in wait_refusals(server, 2)] == ["no token", "token expired"]
    assert all(l["request"] == "ice" for l in refusals(server))
    # the user is the token's sub; ?user= cannot override it
    r = http_get(server.port, "/ice?user=mallory",
                 headers={"Authorization": "Bearer " + token_for("ivy")})
    assert r.status == 200, r
    check_turn_entry(r.json()["iceServers"][0], ["turn:t.example.org"], "ivy", 86400)
    r = http_get(server.port, "/ice?token=" + token_for("jo"))
    check_turn_entry(r.json()["iceServers"][0], ["turn:t.example.org"], "jo", 86400)


def test_ice_methods(server_factory):
    server = server_factory("--signaling.stun_urls=stun:s")
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        r = http_get(server.port, "/ice", method=method)
        assert r.status == 405, (method, r)
        assert r.headers["allow"] == "GET, HEAD"
    get = http_get(server.port, "/ice")
    head = http_get(server.port, "/ice", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert http_get(server.port, "/ice/").status == 404
    assert http_get(server.port, "/icex").status == 404


@pytest.mark.parametrize("flags,message", [
    (["--signaling.turn_secret=s"],
     "signaling.turn_secret is set but signaling.turn_urls is empty"),
    (["--signaling.turn_secret=s", "--signaling.turn_urls= , "],
     "signaling.turn_secret is set but signaling.turn_urls is empty"),
    (["--signaling.turn_urls=turn:t"],
     "signaling.turn_urls is set but signaling.turn_secret is not"),
    (["--signaling.turn_urls=stun:t", "--signaling.turn_secret=s"],
     "signaling.turn_urls: 'stun:t' is not a turn: or turns: URL"),
    (["--signaling.stun_urls=stun:a,http://b"],
     "signaling.stun_urls: 'http://b' is not a stun: or stuns: URL"),
])
def test_ice_startup_errors(flags, message):
    r = run_cli("--role=signaling", "--addr=127.0.0.1", "--port=%d" % free_port(), *flags)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert message in one_line(r.stderr), r.stderr
    r = run_cli("--role=signaling", "--check-config", *flags)
    assert r.returncode == 2 and message in one_line(r.stderr)


def post_json(port, path, obj, headers):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path, json.dumps(obj),
                     dict(headers, **{"Content-Type": "application/json"}))
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        conn.close()


def test_mailbox_api_needs_a_token(server_factory):
    """With auth=jwt the mailbox REST API (POST routes) is refused without
    a valid Bearer token, and served with one."""
    server = jwt_server(server_factory)
    body = {"device_label": "laptop"}
    status, hdrs, data = post_json(server.port, "/register", body, {})
    assert status == 401, data
    assert json.loads(data) == {"message": "Unauthorized"}
    assert hdrs["www-authenticate"] == "Bearer"
    bad = make_jwt({"sub": "x"}, key="wrong")
    status, _, _ = post_json(server.port, "/register", body,
                             {"Authorization": "Bearer " + bad})
    assert status == 401
    status, _, data = post_json(server.port, "/register", body,
                                {"Authorization": "Bearer " + token_for("x")})
    assert status == 200 and "client_id" in json.loads(data), data
