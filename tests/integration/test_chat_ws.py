"""The chat role's native WebSocket protocol (docs/chat.md "WebSocket
protocol"): authentication, rooms, messages with acks and idempotent
client ids, DMs, history (REST and WS), typing, read receipts, presence
across devices, errors, and durability of acknowledged messages across a
restart. Every test runs on SQLite and on PostgreSQL.

Waits are bounded; "nothing else arrived" is proven by causality: a later
marker message on the same path must arrive first.
"""

import asyncio
import signal
import time

import jwt
import pytest

pytest.register_assert_rewrite("chat_fixtures")

import helpers
from chat_fixtures import (
    SECRET,
    Client,
    claims,
    close_all,
    register,
    run,
    user_id,
)


MESSAGE_KEYS = {"id", "room", "from", "body", "ts", "client_id"}
ROOM_KEYS = {"id", "title", "kind", "members", "joined"}


def now_ms():
    return int(time.time() * 1000)


async def connect(chat, token, name):
    return await Client.connect(chat, token, name)


async def join(c, room):
    await c.send({"type": "join", "room": room})
    return await c.expect(type="joined", room=room)


async def send_msg(c, room, body, cid):
    await c.send({"type": "message", "room": room, "body": body, "client_id": cid})
    ack = await c.expect(type="ack", client_id=cid)
    return ack


async def error_for(c, cid=None, **fields):
    if cid is not None:
        fields["client_id"] = cid
    return await c.expect(type="error", **fields)


def assert_error_frame(e, code, cid=None):
    assert e["type"] == "error" and e["code"] == code, e
    assert isinstance(e.get("message"), str) and e["message"], e
    keys = {"type", "code", "message"} | ({"client_id"} if cid is not None else set())
    assert set(e) == keys, e
    if cid is not None:
        assert e["client_id"] == cid, e


def rest_history(chat, token, room, **q):
    qs = "&".join("%s=%s" % kv for kv in q.items())
    r = chat.api("GET", "/api/rooms/%s/messages%s" % (room, "?" + qs if qs else ""), token=token)
    assert r.status == 200, (room, q, r)
    assert set(r.json) == {"room", "messages", "more"}, r.json
    assert r.json["room"] == room, r.json
    assert isinstance(r.json["more"], bool), r.json
    for m in r.json["messages"]:
        assert set(m) == MESSAGE_KEYS, m
    return r.json


def ids(msgs):
    return [m["id"] for m in msgs]


def strip_type(m):
    return {k: v for k, v in m.items() if k != "type"}


def users(chat, *names):
    return [register(chat, n)[0] for n in names]


# ========================================================== authentication


def test_auth_by_query_token_and_welcome(chat):
    ta, tb = users(chat, "alice", "bob")

    async def go():
        b = await connect(chat, tb, "bob")
        a = await connect(chat, ta, "alice")
        try:
            w = a.welcome
            assert set(w) == {"type", "user", "rooms", "online"}, w
            assert w["user"] == "alice", w
            assert sorted(w["online"]) == ["alice", "bob"], w
            # the rooms a fresh user is in: the contract does not say which
            # (the server lists joined rooms); each is a room object
            assert isinstance(w["rooms"], list), w
            for r in w["rooms"]:
                assert set(r) == (ROOM_KEYS if r.get("kind") == "room" else {"id", "kind", "with", "joined"}), r
            assert b.welcome["online"] == ["bob"] and b.welcome["user"] == "bob", b.welcome
            p = await b.expect(type="presence", user="alice")
            assert p == {"type": "presence", "user": "alice", "state": "online"}, p
            await a.send({"type": "ping"})
            assert await a.expect(type="pong") == {"type": "pong"}
        finally:
            await close_all([a, b])

    run(go())


def test_auth_by_first_message(chat):
    (ta,) = users(chat, "alice")

    async def go():
        ws = await helpers.ws_connect(chat.ws_url())
        c = Client(ws, "alice")
        try:
            await c.send({"type": "auth", "token": ta})
            w = await c.expect(type="welcome")
            assert w["user"] == "alice" and "alice" in w["online"], w
            await c.send({"type": "ping"})
            assert await c.expect(type="pong") == {"type": "pong"}
        finally:
            await c.close()

    run(go())


def _bad_tokens(token):
    c = claims(token)
    now = int(time.time())
    head, body, sig = token.split(".")
    return {
        "garbage": "garbage",
        "tampered": ".".join([head, body, ("A" if sig[0] != "A" else "B") + sig[1:]]),
        "expired": jwt.encode(dict(c, iat=now - 7200, exp=now - 60), SECRET, algorithm="HS256"),
        "wrong_secret": jwt.encode(dict(c, iat=now, exp=now + 3600), SECRET + "x", algorithm="HS256"),
        "hs512": jwt.encode(dict(c, iat=now, exp=now + 3600), SECRET, algorithm="HS512"),
    }


def test_bad_token_is_401_before_upgrade(chat):
    (ta,) = users(chat, "alice")
    for name, bad in _bad_tokens(ta).items():
        resp, sock, _, _ = helpers.raw_handshake(chat.port, "/ws?token=" + bad)
        sock.close()
        assert resp.status == 401, (name, resp)
    resp, sock, _, _ = helpers.raw_handshake(chat.port, "/ws?token=" + ta)
    sock.close()
    assert resp.status == 101, resp


def test_revoked_token_is_401_before_upgrade(chat):
    """docs/chat.md: "A bad token is HTTP 401 before the upgrade" - a
    revoked one (logout) included."""
    (ta,) = users(chat, "alice")
    assert chat.api("POST", "/api/logout", token=ta).status == 200
    resp, sock, _, _ = helpers.raw_handshake(chat.port, "/ws?token=" + ta)
    sock.close()
    assert resp.status == 401, resp


def test_revoked_token_in_auth_message_closes_4401(chat):
    (ta,) = users(chat, "alice")
    assert chat.api("POST", "/api/logout", token=ta).status == 200

    async def go():
        c = Client(await helpers.ws_connect(chat.ws_url()), "anon")
        await c.send({"type": "auth", "token": ta})
        code = await c.wait_closed(timeout=5)
        assert code == 4401, (code, c.inbox)
        assert not [m for m in c.inbox if isinstance(m, dict) and m.get("type") == "welcome"], c.inbox

    run(go())


@pytest.mark.parametrize("which", ["garbage", "tampered", "expired", "wrong_secret", "hs512"])
def test_bad_token_in_auth_message_closes_4401(chat, which):
    (ta,) = users(chat, "alice")
    bad = _bad_tokens(ta)[which]

    async def go():
        c = Client(await helpers.ws_connect(chat.ws_url()), "anon")
        await c.send({"type": "auth", "token": bad})
        code = await c.wait_closed(timeout=5)
        assert code == 4401, (code, c.inbox)
        assert not [m for m in c.inbox if isinstance(m, dict) and m.get("type") == "welcome"], c.inbox

    run(go())


REVOKING = {
    "change_password": ("POST", "/api/auth/change-password", {"currentPassword": "secret123", "newPassword": "newpass1"}),
    "change_username": ("POST", "/api/auth/change-username", {"newUsername": "alice_renamed"}),
    "logout": ("POST", "/api/logout", None),
    "delete_account": ("DELETE", "/api/auth/delete-account", {"password": "secret123"}),
}


@pytest.mark.parametrize("action", sorted(REVOKING))
def test_revoking_tokens_closes_open_sessions(chat, action):
    """docs/chat.md: "a revoked token closes sessions" - every connection
    opened with a token the action revokes is closed 4401; one opened with
    the token the action returns works."""
    ta, tb = users(chat, "alice", "bob")
    method, path, body = REVOKING[action]

    async def go():
        b = await connect(chat, tb, "bob")
        a1 = await connect(chat, ta, "alice-1")
        a2 = await connect(chat, ta, "alice-2")
        a3 = None
        try:
            await b.expect(type="presence", user="alice", state="online")
            r = chat.api(method, path, body, token=ta)
            assert r.status == 200, r
            for c in (a1, a2):
                code = await c.wait_closed(timeout=5)
                assert code == 4401, (action, code, c.inbox)
            p = await b.expect(type="presence", state="offline", timeout=10)
            assert p["user"] in ("alice", "alice_renamed"), p
            new = r.json.get("token") if action in ("change_password", "change_username") else None
            if new:
                a3 = await connect(chat, new, "alice-3")
                await a3.send({"type": "ping"})
                assert await a3.expect(type="pong") == {"type": "pong"}
            # bob's session is untouched
            await b.send({"type": "ping"})
            assert await b.expect(type="pong") == {"type": "pong"}
        finally:
            await close_all([a1, a2, a3, b])

    run(go())


@pytest.mark.slow
def test_no_auth_within_10s_closes_4401(chat):
    async def go():
        c = Client(await helpers.ws_connect(chat.ws_url()), "anon")
        code = await c.wait_closed(timeout=20)
        assert code == 4401, (code, c.inbox)

    run(go())


# ============================================================ rooms


def test_join_leave_and_membership_is_persisted(chat):
    ta, tb = users(chat, "alice", "bob")

    async def go():
        a = await connect(chat, ta, "alice")
        b = await connect(chat, tb, "bob")
        try:
            j = await join(a, "tech")
            assert set(j) == {"type", "room", "members", "online"}, j
            assert j["members"] == ["alice"] and "alice" in j["online"], j
            j = await join(b, "tech")
            assert sorted(j["members"]) == ["alice", "bob"], j
            assert sorted(j["online"]) == ["alice", "bob"], j
            rooms = {r["id"]: r for r in chat.api("GET", "/api/rooms", token=ta).json["rooms"]}
            assert rooms["tech"]["joined"] is True and rooms["tech"]["members"] == 2, rooms["tech"]
            await a.close()
            a = await connect(chat, ta, "alice")
            tech = [r for r in a.welcome["rooms"] if r["id"] == "tech"]
            assert tech and tech[0]["joined"] is True, a.welcome
            # a joined member sends without joining again on a new connection
            ack = await send_msg(a, "tech", "still here", "p-1")
            assert (await b.expect(type="message", client_id="p-1"))["id"] == ack["id"]
            # leave
            await b.send({"type": "leave", "room": "tech"})
            assert await b.expect(type="left") == {"type": "left", "room": "tech"}
            await b.send({"type": "message", "room": "tech", "body": "x", "client_id": "after-leave"})
            assert_error_frame(await error_for(b, "after-leave"), "not_member", "after-leave")
            rooms = {r["id"]: r for r in chat.api("GET", "/api/rooms", token=tb).json["rooms"]}
            assert rooms["tech"]["joined"] is False and rooms["tech"]["members"] == 1, rooms["tech"]
            # bob no longer gets tech messages: a marker in general arrives first
            await join(a, "general")
            await join(b, "general")
            await send_msg(a, "tech", "bob is gone", "p-2")
            await send_msg(a, "general", "marker", "p-3")
            got = await b.until(type="message", client_id="p-3")
            assert not [m for m in got if m.get("type") == "message" and m.get("room") == "tech"], got
            # unknown room
            await a.send({"type": "join", "room": "no-such-room"})
            e = await a.expect(type="error")
            assert_error_frame(e, "not_found")
        finally:
            await close_all([a, b])

    run(go())


def test_room_full(chat_factory):
    chat = chat_factory("--chat.max_room_members=2")
    ta, tb, tc = users(chat, "alice", "bob", "carol")
    r = chat.api("POST", "/api/rooms", {"name": "small", "title": "Small"}, token=ta)
    assert r.status == 201, r

    async def go():
        b = await connect(chat, tb, "bob")
        c = await connect(chat, tc, "carol")
        try:
            j = await join(b, "small")
            assert sorted(j["members"]) == ["alice", "bob"], j
            await c.send({"type": "join", "room": "small"})
            assert_error_frame(await c.expect(type="error"), "room_full")
            rooms = {x["id"]: x for x in chat.api("GET", "/api/rooms", token=tc).json["rooms"]}
            assert rooms["small"]["joined"] is False and rooms["small"]["members"] == 2, rooms["small"]
        finally:
            await close_all([b, c])

    run(go())


# ========================================================= messages


def test_room_chat_between_two_users(chat):
    ta, tb, tc = users(chat, "alice", "bob", "carol")

    async def go():
        a = await connect(chat, ta, "alice")
        b = await connect(chat, tb, "bob")
        c = await connect(chat, tc, "carol")
        try:
            await join(a, "tech")
            await join(b, "tech")
            await join(a, "general")
            await join(c, "general")
            t0 = now_ms()
            await a.send({"type": "message", "room": "tech", "body": "hi bob", "client_id": "c-1",
                          "from": "mallory", "ts": 1, "id": 999999})
            ack = await a.expect(type="ack", client_id="c-1")
            t1 = now_ms()
            assert isinstance(ack["id"], int) and ack["id"] != 999999, ack
            assert t0 - 5000 <= ack["ts"] <= t1 + 5000, (t0, ack, t1)  # server epoch ms
            # acknowledged means committed: visible in the database and in history
            rows = chat.db.query("SELECT body FROM messages WHERE id = ?", (ack["id"],))
            assert [tuple(r) for r in rows] == [("hi bob",)], rows
            want = {"type": "message", "id": ack["id"], "room": "tech", "from": "alice",
                    "body": "hi bob", "ts": ack["ts"], "client_id": "c-1"}
            assert await a.expect(type="message", client_id="c-1") == want
            assert await b.expect(type="message", client_id="c-1") == want
            h = rest_history(chat, tb, "tech")
            assert h["messages"] == [strip_type(want)], h
            # bob answers; alice gets it with bob as the sender
            ack2 = await send_msg(b, "tech", "hi alice", "c-2")
            m = await a.expect(type="message", client_id="c-2")
            assert (m["from"], m["body"], m["id"]) == ("bob", "hi alice", ack2["id"]), m
            assert ack2["id"] > ack["id"] and ack2["ts"] >= ack["ts"]
            # carol is not in tech: the general marker is the first message she sees
            await send_msg(a, "general", "marker", "c-3")
            got = await c.until(type="message", client_id="c-3")
            assert [m for m in got if m.get("type") == "message"] == [got[-1]], got
            # a message without client_id: client_id null
            await a.send({"type": "message", "room": "tech", "body": "no id"})
            m = await b.expect(type="message", body="no id")
            assert m["client_id"] is None and m["from"] == "alice", m
            assert ack == {"type": "ack", "client_id": "c-1", "id": ack["id"], "ts": ack["ts"], "room": "tech"}, ack
        finally:
            await close_all([a, b, c])

    run(go())


def test_client_id_makes_a_resend_idempotent(chat):
    ta, tb = users(chat, "alice", "bob")

    async def go():
        a = await connect(chat, ta, "alice")
        b = await connect(chat, tb, "bob")
        try:
            await join(a, "tech")
            await join(b, "tech")
            ack1 = await send_msg(a, "tech", "once", "dup-1")
            ack2 = await send_msg(a, "tech", "once", "dup-1")
            assert ack2["id"] == ack1["id"], (ack1, ack2)
            ack3 = await send_msg(a, "tech", "changed body", "dup-1")
            assert ack3["id"] == ack1["id"], (ack1, ack3)
            # from a new connection of the same user too
            await a.close()
            a = await connect(chat, ta, "alice")
            ack4 = await send_msg(a, "tech", "once", "dup-1")
            assert ack4["id"] == ack1["id"], (ack1, ack4)
            # the same client_id from another user is another message
            ackb = await send_msg(b, "tech", "bob's own", "dup-1")
            assert ackb["id"] != ack1["id"]
            h = rest_history(chat, ta, "tech")
            assert ids(h["messages"]) == [ack1["id"], ackb["id"]], h
            assert [(m["from"], m["body"], m["client_id"]) for m in h["messages"]] == [
                ("alice", "once", "dup-1"), ("bob", "bob's own", "dup-1")], h
        finally:
            await close_all([a, b])

    run(go())


def test_member_gets_messages_on_every_connection(chat):
    ta, tb = users(chat, "alice", "bob")

    async def go():
        a1 = await connect(chat, ta, "alice-1")
        b = await connect(chat, tb, "bob")
        try:
            await join(a1, "tech")
            await join(b, "tech")
            a2 = await connect(chat, ta, "alice-2")
            ack = await send_msg(b, "tech", "to both devices", "md-1")
            for c in (a1, a2):
                assert (await c.expect(type="message", client_id="md-1"))["id"] == ack["id"]
            ack = await send_msg(a2, "tech", "from the phone", "md-2")
            for c in (a1, b):
                m = await c.expect(type="message", client_id="md-2")
                assert (m["id"], m["from"]) == (ack["id"], "alice"), m
            await a2.close()
        finally:
            await close_all([a1, b])

    run(go())


def test_direct_messages(chat):
    ta, tb, tc = users(chat, "alice", "bob", "carol")
    ia, ib = user_id(ta), user_id(tb)
    dm = "dm:%d:%d" % (min(ia, ib), max(ia, ib))

    async def go():
        a = await connect(chat, ta, "alice")
        b = await connect(chat, tb, "bob")
        c = await connect(chat, tc, "carol")
        try:
            await join(a, "general")
            await join(c, "general")
            await a.send({"type": "dm", "to": "bob", "body": "psst", "client_id": "d-1", "from": "carol"})
            ack = await a.expect(type="ack", client_id="d-1")
            assert ack == {"type": "ack", "client_id": "d-1", "id": ack["id"], "ts": ack["ts"], "room": dm}, ack
            want = {"type": "message", "id": ack["id"], "room": dm, "from": "alice", "body": "psst",
                    "ts": ack["ts"], "client_id": "d-1"}
            assert await a.expect(type="message", client_id="d-1") == want
            assert await b.expect(type="message", client_id="d-1") == want  # no join needed
            await b.send({"type": "dm", "to": "alice", "body": "hey", "client_id": "d-2"})
            ack2 = await b.expect(type="ack", client_id="d-2")
            m = await a.expect(type="message", client_id="d-2")
            assert (m["room"], m["from"], m["id"]) == (dm, "bob", ack2["id"]), m
            # carol sees none of it (the general marker comes first)
            await send_msg(a, "general", "marker", "d-3")
            got = await c.until(type="message", client_id="d-3")
            assert [m for m in got if m.get("type") == "message"] == [got[-1]], got
            # listed as a DM room for both
            for tok, other in ((ta, "bob"), (tb, "alice")):
                rooms = chat.api("GET", "/api/rooms", token=tok).json["rooms"]
                dms = [r for r in rooms if r.get("kind") == "dm"]
                assert dms == [{"id": dm, "kind": "dm", "with": other, "joined": True}], rooms
            assert not [r for r in chat.api("GET", "/api/rooms", token=tc).json["rooms"] if r.get("kind") == "dm"]
            h = rest_history(chat, tb, dm)
            assert ids(h["messages"]) == [ack["id"], ack2["id"]], h
            # carol may not read or enter it
            r = chat.api("GET", "/api/rooms/%s/messages" % dm, token=tc)
            assert r.status == 403 and isinstance(r.json, dict) and set(r.json) == {"error"}, r
            await c.send({"type": "history", "room": dm, "limit": 10})
            e = await c.expect(type="error")
            assert e["code"] in ("forbidden", "not_found"), e
            await c.send({"type": "join", "room": dm})
            e = await c.expect(type="error")
            assert e["code"] in ("forbidden", "not_found"), e
            await c.send({"type": "message", "room": dm, "body": "intrude", "client_id": "d-4"})
            e = await c.expect(type="error", client_id="d-4")
            assert e["code"] in ("forbidden", "not_member", "not_found"), e
            assert ids(rest_history(chat, ta, dm)["messages"]) == [ack["id"], ack2["id"]]
            # unknown user
            await a.send({"type": "dm", "to": "nobody_here", "body": "hello?", "client_id": "d-5"})
            assert_error_frame(await error_for(a, "d-5"), "not_found", "d-5")
        finally:
            await close_all([a, b, c])

    run(go())


# ========================================================== history


async def _send_many(c, room, n, prefix):
    """Send n messages pipelined; returns their acks in order."""
    for i in range(n):
        await c.send({"type": "message", "room": room, "body": "%s %d" % (prefix, i),
                      "client_id": "%s-%d" % (prefix, i)})
    acks = []
    for i in range(n):
        acks.append(await c.expect(type="ack", client_id="%s-%d" % (prefix, i), timeout=15))
    return acks


def test_history_pagination_rest_and_ws(chat):
    ta, tb = users(chat, "alice", "bob")

    async def go():
        a = await connect(chat, ta, "alice")
        b = await connect(chat, tb, "bob")
        try:
            await join(a, "tech")
            await join(b, "tech")
            acks = []
            for i in range(7):  # alternate senders
                c = a if i % 2 == 0 else b
                acks.append(await send_msg(c, "tech", "msg %d" % i, "h-%d" % i))
            mid = [x["id"] for x in acks]
            assert mid == sorted(mid) and len(set(mid)) == 7, mid
            await close_all([a, b])

            full = rest_history(chat, tb, "tech", limit=100)
            assert ids(full["messages"]) == mid and full["more"] is False, full
            assert [m["from"] for m in full["messages"]] == ["alice", "bob"] * 3 + ["alice"]
            assert [m["body"] for m in full["messages"]] == ["msg %d" % i for i in range(7)]
            ts = [m["ts"] for m in full["messages"]]
            assert ts == sorted(ts) and ts == [x["ts"] for x in acks], ts
            cases = [
                (dict(limit=3), mid[4:7], True),
                (dict(before=mid[4], limit=3), mid[1:4], True),
                (dict(before=mid[3], limit=3), mid[0:3], False),
                (dict(before=mid[1], limit=3), mid[0:1], False),
                (dict(before=mid[0], limit=3), [], False),
                (dict(after=mid[0], limit=3), mid[1:4], True),
                (dict(after=mid[3], limit=3), mid[4:7], False),
                (dict(after=mid[6], limit=3), [], False),
                (dict(limit=7), mid, False),
            ]
            for q, want, more in cases:
                h = rest_history(chat, ta, "tech", **q)
                assert (ids(h["messages"]), h["more"]) == (want, more), (q, h)
            by_id = {m["id"]: m for m in full["messages"]}

            # after a reconnect, over the WebSocket
            a = await connect(chat, ta, "alice")
            for q, want, more in [({"limit": 3}, mid[4:7], True),
                                  ({"before": mid[4], "limit": 3}, mid[1:4], True),
                                  ({"before": mid[1], "limit": 3}, mid[0:1], False),
                                  ({"limit": 50}, mid, False)]:
                await a.send(dict({"type": "history", "room": "tech"}, **q))
                h = await a.expect(type="history", room="tech")
                assert set(h) == {"type", "room", "messages", "more"}, h
                assert (ids(h["messages"]), h["more"]) == (want, more), (q, h)
                for m in h["messages"]:
                    assert strip_type(m) == by_id[m["id"]], (m, by_id[m["id"]])
            await a.close()
        finally:
            await close_all([a, b])

    run(go())


def test_history_default_and_maximum_page(chat_factory):
    chat = chat_factory("--chat.history_limit=4")
    (ta,) = users(chat, "alice")

    async def go():
        a = await connect(chat, ta, "alice")
        try:
            await join(a, "tech")
            acks = await _send_many(a, "tech", 205, "bulk")
            mid = [x["id"] for x in acks]
            assert len(set(mid)) == 205
            h = rest_history(chat, ta, "tech")
            assert (ids(h["messages"]), h["more"]) == (mid[-4:], True), h
            h = rest_history(chat, ta, "tech", limit=1000)
            assert (ids(h["messages"]), h["more"]) == (mid[5:], True), ids(h["messages"])[:3]
            h = rest_history(chat, ta, "tech", before=mid[5], limit=1000)
            assert (ids(h["messages"]), h["more"]) == (mid[:5], False), h
            await a.send({"type": "history", "room": "tech"})
            h = await a.expect(type="history", room="tech")
            assert (ids(h["messages"]), h["more"]) == (mid[-4:], True), h
        finally:
            await a.close()

    run(go(), timeout=120)


# =========================================================== typing


def _typing(msgs, user=None, room=None):
    return [m for m in msgs if m.get("type") == "typing"
            and (user is None or m.get("user") == user) and (room is None or m.get("room") == room)]


def test_typing_is_throttled_per_user_and_room(chat_factory):
    chat = chat_factory("--chat.typing_interval=60s")
    ta, tb, tc = users(chat, "alice", "bob", "carol")

    async def go():
        a = await connect(chat, ta, "alice")
        b = await connect(chat, tb, "bob")
        c = await connect(chat, tc, "carol")
        try:
            for cl in (a, b):
                await join(cl, "tech")
                await join(cl, "random")
            await join(c, "random")
            for _ in range(5):
                await a.send({"type": "typing", "room": "tech"})
            await send_msg(a, "tech", "marker 1", "t-1")
            got = await b.until(type="message", client_id="t-1")
            assert _typing(got) == [{"type": "typing", "room": "tech", "user": "alice"}], got
            mine = await a.until(type="message", client_id="t-1")
            assert _typing(mine) == [], mine  # not echoed to the typist
            # another room and another user have their own budget
            for _ in range(3):
                await a.send({"type": "typing", "room": "random"})
                await b.send({"type": "typing", "room": "tech"})
            await send_msg(a, "random", "marker 2", "t-2")
            await send_msg(b, "tech", "marker 3", "t-3")
            got_b = await b.until(type="message", client_id="t-2")
            got_b += await b.until(type="message", client_id="t-3")
            assert _typing(got_b) == [{"type": "typing", "room": "random", "user": "alice"}], got_b
            got_a = await a.until(type="message", client_id="t-2")
            got_a += await a.until(type="message", client_id="t-3")
            assert _typing(got_a) == [{"type": "typing", "room": "tech", "user": "bob"}], got_a
            got_c = await c.until(type="message", client_id="t-2")
            assert _typing(got_c) == [{"type": "typing", "room": "random", "user": "alice"}], got_c
            # still inside the interval: nothing more from alice in tech
            await a.send({"type": "typing", "room": "tech"})
            await send_msg(a, "tech", "marker 4", "t-4")
            got = await b.until(type="message", client_id="t-4")
            assert _typing(got) == [], got
        finally:
            await close_all([a, b, c])

    run(go())


def test_typing_is_forwarded_again_after_the_interval(chat_factory):
    chat = chat_factory("--chat.typing_interval=1s")
    ta, tb = users(chat, "alice", "bob")

    async def go():
        a = await connect(chat, ta, "alice")
        b = await connect(chat, tb, "bob")
        try:
            await join(a, "tech")
            await join(b, "tech")
            await a.send({"type": "typing", "room": "tech"})
            assert await b.expect(type="typing") == {"type": "typing", "room": "tech", "user": "alice"}
            await asyncio.sleep(1.5)
            await a.send({"type": "typing", "room": "tech"})
            await a.send({"type": "typing", "room": "tech"})
            await send_msg(a, "tech", "marker", "ti-1")
            got = await b.until(type="message", client_id="ti-1")
            assert _typing(got) == [{"type": "typing", "room": "tech", "user": "alice"}], got
        finally:
            await close_all([a, b])

    run(go())


# ==================================================== read receipts


def test_read_receipts_forward_only(chat):
    ta, tb = users(chat, "alice", "bob")

    async def go():
        a = await connect(chat, ta, "alice")
        b = await connect(chat, tb, "bob")
        try:
            await join(a, "tech")
            await join(b, "tech")
            m1, m2, m3 = [x["id"] for x in [await send_msg(a, "tech", "r%d" % i, "r-%d" % i) for i in range(3)]]
            await b.send({"type": "read", "room": "tech", "message_id": m2})
            r = await a.expect(type="read", user="bob")
            assert r == {"type": "read", "room": "tech", "user": "bob", "message_id": m2}, r
            assert stored_read(chat, "bob", "tech") == m2
            # backwards: not stored, and no receipt tells the members it moved back
            await b.send({"type": "read", "room": "tech", "message_id": m1})
            await b.send({"type": "ping"})
            await b.expect(type="pong")
            await asyncio.sleep(0.3)
            assert stored_read(chat, "bob", "tech") == m2
            await b.send({"type": "read", "room": "tech", "message_id": m3})
            got = await a.until(type="read", user="bob", message_id=m3)
            for x in _reads(got, "bob"):
                assert x["message_id"] >= m2, got
            assert stored_read(chat, "bob", "tech") == m3
            # alice reads; bob is told
            await a.send({"type": "read", "room": "tech", "message_id": m3})
            r = await b.expect(type="read", user="alice")
            assert r == {"type": "read", "room": "tech", "user": "alice", "message_id": m3}, r
        finally:
            await close_all([a, b])

    run(go())


def stored_read(chat, username, room):
    """The read marker in the database (schema of roles/chat/chat_schema.c:
    reads(room_id, user_id, message_id)); None when there is none."""
    rows = chat.db.query(
        "SELECT r.message_id FROM reads r JOIN users u ON u.id = r.user_id "
        "JOIN rooms ro ON ro.id = r.room_id WHERE u.username = ? AND ro.name = ?", (username, room))
    assert len(rows) <= 1, rows
    return int(rows[0][0]) if rows else None


def _reads(msgs, user):
    return [m for m in msgs if m.get("type") == "read" and m.get("user") == user]


# ========================================================= presence


def _presence(msgs, user):
    return [m for m in msgs if m.get("type") == "presence" and m.get("user") == user]


def test_presence_across_devices(chat):
    ta, tb = users(chat, "alice", "bob")

    async def go():
        b = await connect(chat, tb, "bob")
        a1 = a2 = None
        try:
            await join(b, "tech")
            a1 = await connect(chat, ta, "alice-1")
            assert await b.expect(type="presence", user="alice") == {
                "type": "presence", "user": "alice", "state": "online"}
            assert sorted(a1.welcome["online"]) == ["alice", "bob"], a1.welcome
            await join(a1, "tech")
            a2 = await connect(chat, ta, "alice-2")
            await send_msg(a2, "tech", "second device", "pr-1")
            got = await b.until(type="message", client_id="pr-1")
            assert _presence(got, "alice") == [], got  # no second "online"
            # closing one of two connections: no "offline"
            await a1.close()
            await asyncio.sleep(0.5)
            await send_msg(a2, "tech", "still online", "pr-2")
            got = await b.until(type="message", client_id="pr-2")
            assert _presence(got, "alice") == [], got
            # closing the last one: "offline"
            await a2.close()
            p = await b.expect(type="presence", user="alice", timeout=10)
            assert p == {"type": "presence", "user": "alice", "state": "offline"}, p
            # and back
            a3 = await connect(chat, ta, "alice-3")
            assert await b.expect(type="presence", user="alice") == {
                "type": "presence", "user": "alice", "state": "online"}
            await a3.close()
            assert (await b.expect(type="presence", user="alice", timeout=10))["state"] == "offline"
        finally:
            await close_all([a1, a2, b])

    run(go())


# =========================================================== errors


def test_protocol_errors(chat):
    (ta,) = users(chat, "alice")

    async def go():
        a = await connect(chat, ta, "alice")
        try:
            await join(a, "tech")
            await a.send({"type": "message", "room": "tech", "body": "x" * 4001, "client_id": "e-1"})
            assert_error_frame(await error_for(a, "e-1"), "too_long", "e-1")
            ack = await send_msg(a, "tech", "é" * 4000, "e-2")  # 4000 characters, 8000 bytes
            m = await a.expect(type="message", client_id="e-2")
            assert m["body"] == "é" * 4000 and m["id"] == ack["id"]
            await a.send({"type": "message", "room": "random", "body": "hi", "client_id": "e-3"})
            assert_error_frame(await error_for(a, "e-3"), "not_member", "e-3")
            await a.send({"type": "message", "room": "no-such-room", "body": "hi", "client_id": "e-4"})
            assert_error_frame(await error_for(a, "e-4"), "not_found", "e-4")
            await a.send({"type": "message", "room": "tech", "client_id": "e-5"})
            assert_error_frame(await error_for(a, "e-5"), "bad_request", "e-5")
            await a.send({"type": "dm", "to": "alice_not_here", "body": "x" * 4001, "client_id": "e-6"})
            e = await error_for(a, "e-6")
            assert e["code"] in ("too_long", "not_found"), e
            for bad in [{"type": "no_such_type"}, "not json", "[1, 2]", {"room": "tech"}, {"type": "join"},
                        {"type": "history"}]:
                await a.send(bad)
                assert_error_frame(await a.expect(type="error"), "bad_request")
            # nothing was stored but e-2, and the connection is still usable
            h = rest_history(chat, ta, "tech")
            assert ids(h["messages"]) == [ack["id"]], h
            await a.send({"type": "ping"})
            assert await a.expect(type="pong") == {"type": "pong"}
        finally:
            await a.close()

    run(go())


def test_per_connection_rate_limit(chat_factory):
    chat = chat_factory("--limits.per_conn_rate=1/60s", "--limits.per_conn_burst=3")
    (ta,) = users(chat, "alice")

    async def go():
        a = await connect(chat, ta, "alice")
        try:
            for _ in range(10):
                await a.send({"type": "ping"})
            got = await a.collect(2.0)
            pongs = [m for m in got if m.get("type") == "pong"]
            limited = [m for m in got if m.get("type") == "error" and m.get("code") == "rate_limited"]
            assert 1 <= len(pongs) < 10, got
            assert limited, got
        finally:
            await a.close()

    run(go())


# ======================================================= durability


@pytest.mark.parametrize("how", ["sigterm", "sigkill_mid_burst"])
def test_acknowledged_messages_survive_a_restart(chat, how):
    ta, tb = users(chat, "alice", "bob")
    n = 120

    async def burst():
        a = await connect(chat, ta, "alice")
        await join(a, "tech")
        for i in range(n):
            await a.send({"type": "message", "room": "tech", "body": "durable %d" % i,
                          "client_id": "dur-%d" % i})
        acked = {}
        want = n if how == "sigterm" else n // 2
        deadline = time.monotonic() + 30
        while len(acked) < want and time.monotonic() < deadline:
            m = await a.expect(type="ack", timeout=max(0.1, deadline - time.monotonic()))
            acked[m["client_id"]] = m["id"]
        assert len(acked) >= want, (len(acked), want)
        if how == "sigkill_mid_burst":
            chat.stop(signal.SIGKILL)
            # acks already delivered to the client count as acknowledged
            try:
                while True:
                    m = await a.expect(type="ack", timeout=1)
                    acked[m["client_id"]] = m["id"]
            except AssertionError:
                pass
        await a.close()
        return acked

    acked = run(burst())
    if how == "sigterm":
        rc = chat.stop(signal.SIGTERM)
        assert rc == 0, (rc, chat.stderr_text()[-2000:])
    chat.start()
    h = rest_history(chat, tb, "tech", limit=200)
    stored = {m["client_id"]: m for m in h["messages"]}
    missing = sorted(set(acked) - set(stored))
    assert not missing, ("acknowledged but lost", missing[:10], len(missing))
    for cid, mid in acked.items():
        m = stored[cid]
        assert (m["id"], m["from"], m["body"]) == (mid, "alice", "durable %s" % cid.split("-")[1]), m
    assert len(h["messages"]) == len(stored), "a client_id stored twice"
    if how == "sigterm":
        assert len(stored) == n

    # tokens, membership and idempotency survive too
    async def after():
        a = await connect(chat, ta, "alice")
        try:
            cid = sorted(acked)[0]
            ack = await send_msg(a, "tech", "durable %s" % cid.split("-")[1], cid)
            assert ack["id"] == acked[cid], (ack, acked[cid])
            ack = await send_msg(a, "tech", "after restart", "dur-new")
            assert ack["id"] > max(acked.values())
        finally:
            await a.close()

    run(after())


def test_backlog_refuses_messages_instead_of_queueing_without_bound(chat_factory):
    # chat.max_backlog=1: while one database operation waits, further
    # messages are refused with "overloaded" and nothing of them is stored.
    chat = chat_factory("--chat.max_backlog=1")
    token, _ = register(chat, "burst")

    async def go():
        c = await Client.connect(chat, token, "burst")
        try:
            await c.send({"type": "join", "room": "general"})
            await c.expect(type="joined")
            n = 60
            for i in range(n):
                await c.send({"type": "message", "room": "general", "body": "b%d" % i,
                              "client_id": "k%d" % i})
            acks, refused = set(), set()
            while len(acks) + len(refused) < n:
                m = await c.expect(lambda m: m["type"] in ("ack", "error"), timeout=10)
                if m["type"] == "ack":
                    acks.add(m["client_id"])
                else:
                    assert m["code"] == "overloaded", m
                    refused.add(m["client_id"])
            assert acks and refused, (acks, refused)
            assert not acks & refused
            stored = {r[0] for r in chat.db.query(
                "SELECT client_id FROM messages WHERE client_id IS NOT NULL")}
            assert stored == acks
        finally:
            await c.close()

    run(go())
