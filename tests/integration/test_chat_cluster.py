"""Chat role: two instances sharing one database and one real redis-server.

Messages, typing, read receipts, DMs, membership changes, revocations and
presence must cross instances; presence counts a user once however many
instances hold a session; a SIGKILLed instance's users go offline.
Every test runs on SQLite (one file, two processes) and PostgreSQL.
"""

import signal

import pytest

from chat_fixtures import Client, close_all, register, run



@pytest.fixture
def pair(chat_factory, redis_server):
    a = chat_factory("--redis.url=" + redis_server.url)
    b = chat_factory("--redis.url=" + redis_server.url)
    return a, b


def tokens(chat, *names):
    return [register(chat, n)[0] for n in names]


async def joined(client, room="general"):
    await client.send({"type": "join", "room": room})
    return await client.expect(type="joined", room=room)


def test_messages_typing_reads_and_dms_cross_instances(pair):
    a, b = pair
    ta, tb = tokens(a, "alice", "bob")

    async def go():
        alice = await Client.connect(a, ta, "alice")
        bob = await Client.connect(b, tb, "bob")
        try:
            await joined(alice)
            j = await joined(bob)
            assert sorted(j["members"]) == ["alice", "bob"]
            assert sorted(j["online"]) == ["alice", "bob"]
            await alice.send({"type": "message", "room": "general", "body": "over redis",
                              "client_id": "m1"})
            ack = await alice.expect(type="ack", client_id="m1")
            got = await bob.expect(type="message", client_id="m1")
            assert got["id"] == ack["id"] and got["from"] == "alice"
            assert got["body"] == "over redis" and got["ts"] == ack["ts"]
            await bob.send({"type": "typing", "room": "general"})
            t = await alice.expect(type="typing")
            assert t == {"type": "typing", "room": "general", "user": "bob"}
            await bob.send({"type": "read", "room": "general", "message_id": ack["id"]})
            r = await alice.expect(type="read", user="bob")
            assert r["message_id"] == ack["id"]
            await bob.send({"type": "dm", "to": "alice", "body": "psst", "client_id": "d1"})
            dm = await alice.expect(type="message", client_id="d1")
            assert dm["from"] == "bob" and dm["room"].startswith("dm:")
            # exactly one copy of each message reached bob
            rest = await bob.collect(0.5)
            assert not [m for m in rest if m.get("type") == "message" and
                        m.get("client_id") == "m1"]
        finally:
            await close_all([alice, bob])

    run(go())


def test_membership_reaches_the_other_instance_cache(pair):
    a, b = pair
    ta, tb, tc = tokens(a, "alice", "bob", "carol")

    async def go():
        bob = await Client.connect(b, tb, "bob")
        await joined(bob)  # instance b now caches general = {bob}
        carol_b = await Client.connect(b, tc, "carol-b")
        carol_a = await Client.connect(a, tc, "carol-a")
        alice = await Client.connect(a, ta, "alice")
        try:
            await joined(carol_a)  # joins through a only
            await joined(alice)
            await alice.send({"type": "message", "room": "general", "body": "all of you",
                              "client_id": "x"})
            # carol's session on b is delivered by b, which learnt of the
            # membership from a's event, not from its database cache
            got = await carol_b.expect(type="message", client_id="x")
            assert got["from"] == "alice"
            await bob.expect(type="message", client_id="x")
            await carol_a.expect(type="message", client_id="x")
            await carol_a.send({"type": "leave", "room": "general"})
            await carol_a.expect(type="left")
            await alice.send({"type": "message", "room": "general", "body": "gone?",
                              "client_id": "y"})
            await bob.expect(type="message", client_id="y")
            later = await carol_b.collect(0.7)
            assert not [m for m in later if m.get("type") == "message"], later
        finally:
            await close_all([alice, bob, carol_a, carol_b])

    run(go())


def test_presence_counts_a_user_once_across_instances(pair):
    a, b = pair
    ta, tb = tokens(a, "alice", "bob")

    async def go():
        bob = await Client.connect(b, tb, "bob")
        alice1 = await Client.connect(a, ta, "alice-a")
        try:
            on = await bob.expect(type="presence", user="alice")
            assert on["state"] == "online"
            assert "alice" in alice1.welcome["online"] and "bob" in alice1.welcome["online"]
            alice2 = await Client.connect(b, ta, "alice-b")
            assert "alice" in alice2.welcome["online"]
            await alice1.close()
            # alice is still online through her session on b
            quiet = await bob.collect(1.0)
            assert not [m for m in quiet if m.get("type") == "presence"], quiet
            await alice2.close()
            off = await bob.expect(type="presence", user="alice")
            assert off["state"] == "offline"
        finally:
            await close_all([bob, alice1])

    run(go())


def test_revocation_closes_sessions_on_every_instance(pair):
    a, b = pair
    (ta,) = tokens(a, "alice")

    async def go():
        on_b = await Client.connect(b, ta, "alice-b")
        try:
            r = a.api("POST", "/api/auth/change-password",
                      {"currentPassword": "secret123", "newPassword": "another456"}, token=ta)
            assert r.status == 200, r.body
            assert await on_b.wait_closed(timeout=10) == 4401
        finally:
            await close_all([on_b])
        assert b.api("GET", "/api/profile", token=ta).status == 401

    run(go())


def test_a_killed_instance_takes_its_users_offline(pair, backend):
    if backend.kind != "sqlite":
        pytest.skip("instance loss does not depend on the database")
    a, b = pair
    ta, tb = tokens(a, "alice", "bob")

    async def go():
        bob = await Client.connect(b, tb, "bob")
        alice = await Client.connect(a, ta, "alice")
        try:
            await bob.expect(type="presence", user="alice", state="online")
            a.srv.proc.send_signal(signal.SIGKILL)
            a.srv.proc.wait(timeout=10)
            # the dead instance stops announcing its users; b notices
            off = await bob.expect(type="presence", user="alice", timeout=30)
            assert off["state"] == "offline"
        finally:
            await close_all([bob, alice])

    run(go(), timeout=60)


def test_ready_reports_redis(chat_factory, redis_server):
    srv = chat_factory("--redis.url=" + redis_server.url)
    assert srv.api("GET", "/ready").status == 200
    redis_server.kill()
    import time
    deadline = time.monotonic() + 10
    body = None
    while time.monotonic() < deadline:
        r = srv.api("GET", "/ready")
        body = r.json
        if r.status == 503:
            break
        time.sleep(0.1)
    assert r.status == 503 and "redis" in body["failing"], body
    # messages are still stored and delivered locally while Redis is down
    t1, t2 = tokens(srv, "ann", "ben")

    async def go():
        ann = await Client.connect(srv, t1, "ann")
        ben = await Client.connect(srv, t2, "ben")
        try:
            await joined(ann)
            await joined(ben)
            await ann.send({"type": "message", "room": "general", "body": "local",
                            "client_id": "l1"})
            await ann.expect(type="ack", client_id="l1")
            await ben.expect(type="message", client_id="l1")
        finally:
            await close_all([ann, ben])

    run(go())
    redis_server.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if srv.api("GET", "/ready").status == 200:
            break
        time.sleep(0.1)
    assert srv.api("GET", "/ready").status == 200
