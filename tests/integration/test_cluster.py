"""Cluster mode of the signaling role: two p2pmesh instances sharing one
real redis-server. Peers on different instances find each other (bootstrap
lists, peer_joined/peer_left), relay both ways with `from` forced, take ids
over, and wait in the offline mailbox; presence keys live in Redis with a
TTL; Redis killed and restarted mid-test loses nothing acknowledged, turns
/ready 503 meanwhile, and recovers on its own; a dead instance's peers
leave."""

import asyncio
import json
import os
import signal
import time

import pytest

from helpers import (
    assert_silent,
    close_all,
    get_metrics,
    http_get,
    join,
    metric_value,
    recv_json,
    wait_closed,
    ws_connect,
)


def run(coro, timeout=40):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def pair(server_factory, redis_server, *flags):
    url = "--redis.url=" + redis_server.url
    a = server_factory(url, *flags)
    b = server_factory(url, *flags)
    wait_until(lambda: cluster_size(a) == 1 and cluster_size(b) == 1,
               "the instances never heard each other")
    return a, b


def cluster_size(srv):
    return metric_value(get_metrics(srv.port)[1],
                        "p2pmesh_signaling_cluster_instances")


def wait_until(pred, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(what)


def ready(srv):
    return http_get(srv.port, "/ready").status == 200


def synced(*servers):
    """Every instance's replica holds every joined peer (joins travel
    through Redis, so another instance learns of one a moment later)."""
    def counts():
        out = []
        for srv in servers:
            m = get_metrics(srv.port)[1]
            out.append((metric_value(m, "p2pmesh_signaling_peers") or 0,
                        metric_value(m, "p2pmesh_signaling_cluster_remote_peers")
                        or 0))
        return out

    def ok():
        c = counts()
        total = sum(local for local, _ in c)
        return all(local + remote == total for local, remote in c)
    wait_until(ok, "replicas never converged")


async def join_on(srv, pid, room=None, sync=()):
    """Join pid on srv; with sync, wait until those instances know it."""
    url = srv.ws_url + ("?room=%s" % room if room else "")
    ws, boot = await join(url, pid)
    if sync:
        await asyncio.to_thread(synced, *sync)
    return ws, boot


def test_peers_on_two_instances_find_and_reach_each_other(server_factory,
                                                          redis_server):
    a, b = pair(server_factory, redis_server)

    async def go():
        wa, boot = await join_on(a, "aa", sync=(a, b))
        assert boot["peers"] == []
        wb, boot = await join_on(b, "ab")
        assert boot["peers"] == [{"id": "aa"}]
        assert await recv_json(wa) == {"type": "peer_joined", "peerId": "ab"}
        # from is forced to the sender's id on the other instance too
        await wb.send(json.dumps({"type": "signal", "to": "aa", "from": "x",
                                  "signal": {"sdp": "v=0"}}))
        assert await recv_json(wa) == {"type": "signal", "to": "aa",
                                       "from": "ab", "signal": {"sdp": "v=0"}}
        await wa.send(json.dumps({"type": "batched_signals", "to": "ab",
                                  "signals": [1, 2]}))
        assert await recv_json(wb) == {"type": "batched_signals", "to": "ab",
                                       "signals": [1, 2], "from": "aa"}
        # a departure on b is told to a exactly once
        await wb.close()
        assert await recv_json(wa) == {"type": "peer_left", "peerId": "ab"}
        await assert_silent(wa, 0.5)
        await close_all([wa])

    run(go())
    m = get_metrics(b.port)[1]
    assert metric_value(m, "p2pmesh_signaling_cluster_relay_seconds_count") >= 1
    assert metric_value(m, "p2pmesh_signaling_redis_up") == 1


def test_realms_stay_apart_across_instances(server_factory, redis_server):
    a, b = pair(server_factory, redis_server)

    async def go():
        wa, _ = await join_on(a, "aa", room="one")
        wb, boot = await join_on(b, "ab", room="two")
        assert boot["peers"] == []
        await wb.send(json.dumps({"type": "signal", "to": "aa"}))
        # not in realm two: held, and nobody in realm one hears of it
        await assert_silent(wa, 0.5)
        await close_all([wa, wb])

    run(go())


def test_presence_keys_in_redis(server_factory, redis_server):
    a, b = pair(server_factory, redis_server, "--signaling.presence_ttl=9s",
                "--redis.key_prefix=pmtest")

    async def go():
        wa, _ = await join_on(a, "ab12", room="r:1/x")
        key = "pmtest:peer:r%3A1%2Fx:ab12"
        inst = redis_server.cli("GET", key)
        assert inst and len(inst) == 16, inst
        ttl = int(redis_server.cli("PTTL", key))
        assert 0 < ttl <= 9000, ttl
        await wa.close()
        await asyncio.sleep(0.3)
        assert redis_server.cli("EXISTS", key) == "0"

    run(go())


def test_takeover_across_instances(server_factory, redis_server):
    a, b = pair(server_factory, redis_server)

    async def go():
        w1, _ = await join_on(a, "aa", sync=(a, b))
        w2, _ = await join_on(b, "bb", sync=(a, b))
        assert (await recv_json(w1))["type"] == "peer_joined"
        w3, boot = await join_on(b, "aa")
        assert boot["peers"] == [{"id": "bb"}]
        code, seen = await wait_closed(w1)
        assert json.loads(seen[-1]) == {
            "type": "error", "message": "Another client joined with your ID."}
        assert code == 1000
        # bb sees the id joined again, never a peer_left for the live id
        msgs = []
        try:
            while True:
                msgs.append(await recv_json(w2, 0.6))
        except asyncio.TimeoutError:
            pass
        assert {"type": "peer_left", "peerId": "aa"} not in msgs, msgs
        # and a relay to aa reaches the new holder
        await w2.send(json.dumps({"type": "offer", "to": "aa"}))
        assert await recv_json(w3) == {"type": "offer", "to": "aa",
                                       "from": "bb"}
        await close_all([w2, w3])

    run(go())


def test_offline_message_waits_for_a_peer_joining_elsewhere(server_factory,
                                                           redis_server):
    a, b = pair(server_factory, redis_server)

    async def go():
        wa, _ = await join_on(a, "aa")
        await wa.send(json.dumps({"type": "offer", "to": "cc", "n": 1}))
        await wa.send(json.dumps({"type": "answer", "to": "cc", "n": 2}))
        await asyncio.sleep(0.2)
        wc, _ = await join_on(b, "cc")
        assert await recv_json(wc) == {"type": "offer", "to": "cc", "n": 1,
                                       "from": "aa"}
        assert await recv_json(wc) == {"type": "answer", "to": "cc", "n": 2,
                                       "from": "aa"}
        await close_all([wa, wc])

    run(go())


def test_expiry_tells_a_sender(server_factory, redis_server):
    a, b = pair(server_factory, redis_server, "--signaling.mailbox_ttl=300ms")

    async def go():
        wa, _ = await join_on(a, "aa")
        await wa.send(json.dumps({"type": "signal", "to": "zz"}))
        assert await recv_json(wa, 3) == {"type": "error",
                                          "message": "Peer zz not found."}
        await close_all([wa])

    run(go())


def test_redis_outage_keeps_local_service_and_recovers(server_factory,
                                                       redis_server):
    a, b = pair(server_factory, redis_server)

    async def go():
        wa, _ = await join_on(a, "aa")
        wa2, _ = await join_on(a, "ac", sync=(a, b))
        await recv_json(wa)
        wb, _ = await join_on(b, "ab", sync=(a, b))
        await recv_json(wa)
        await recv_json(wa2)

        redis_server.kill()
        await asyncio.to_thread(wait_until, lambda: not ready(a) and not ready(b),
                                "/ready stayed 200 with Redis down")
        r = http_get(a.port, "/ready")
        assert r.status == 503 and "redis" in r.json()["failing"], r.body
        assert http_get(a.port, "/health").json()["redis"] == "down"
        # local peers keep working
        await wa.send(json.dumps({"type": "signal", "to": "ac", "k": 1}))
        assert await recv_json(wa2) == {"type": "signal", "to": "ac", "k": 1,
                                        "from": "aa"}
        # a message for the other instance is kept, not lost
        await wa.send(json.dumps({"type": "signal", "to": "ab", "k": 2}))
        await asyncio.sleep(0.3)

        redis_server.start()
        await asyncio.to_thread(wait_until, lambda: ready(a) and ready(b),
                                "did not recover after Redis came back")
        assert await recv_json(wb, 5) == {"type": "signal", "to": "ab",
                                          "k": 2, "from": "aa"}
        # presence re-registered in the new, empty Redis
        assert redis_server.cli("EXISTS", "sig:peer::aa") == "1"
        assert redis_server.cli("EXISTS", "sig:peer::ab") == "1"
        # and new traffic crosses instances again
        await wb.send(json.dumps({"type": "ack", "to": "ac"}))
        assert await recv_json(wa2) == {"type": "ack", "to": "ac",
                                        "from": "ab"}
        await close_all([wa, wa2, wb])

    run(go(), timeout=60)
    m = get_metrics(a.port)[1]
    assert metric_value(m, "p2pmesh_signaling_redis_up") == 1


def test_dead_instance_peers_leave(server_factory, redis_server):
    a, b = pair(server_factory, redis_server)

    async def go():
        wa, _ = await join_on(a, "aa", sync=(a, b))
        wb, _ = await join_on(b, "ab")
        assert await recv_json(wa) == {"type": "peer_joined", "peerId": "ab"}
        os.kill(b.proc.pid, signal.SIGKILL)
        b.proc.wait(timeout=5)
        assert await recv_json(wa, 10) == {"type": "peer_left",
                                           "peerId": "ab"}
        await close_all([wa])

    run(go())


def test_instance_started_later_learns_existing_peers(server_factory,
                                                      redis_server):
    url = "--redis.url=" + redis_server.url
    a = server_factory(url)

    async def go():
        wa, _ = await join_on(a, "aa")
        b = server_factory(url)
        await asyncio.to_thread(wait_until, lambda: ready(b), "b not ready")
        await asyncio.to_thread(synced, a, b)
        wb, boot = await join_on(b, "ab")
        assert boot["peers"] == [{"id": "aa"}]
        await close_all([wa, wb])

    run(go())


def test_require_tls_refuses_plain_redis(server_factory, redis_server):
    from helpers import run_cli
    r = run_cli("--role=signaling", "--redis.url=" + redis_server.url,
                "--redis.require_tls=true", "--check-config")
    assert r.returncode == 2
    assert "rediss://" in r.stderr


def _ca_and_server_cert(d):
    """A private CA and a redis server certificate for localhost/127.0.0.1."""
    import subprocess

    def sh(cmd):
        subprocess.run(cmd, shell=True, check=True, cwd=d,
                       capture_output=True, timeout=60)
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
       "-keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca")
    sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
       "-keyout redis.key -out redis.csr -subj /CN=localhost")
    sh("printf 'subjectAltName=IP:127.0.0.1,DNS:localhost' > ext && "
       "openssl x509 -req -in redis.csr -CA ca.crt -CAkey ca.key "
       "-CAcreateserial -out redis.crt -days 2 -extfile ext")


def test_cluster_over_tls_with_a_private_ca(server_factory, tmp_path):
    """rediss:// (as ElastiCache with encryption in transit), the server
    certificate checked against redis.tls_ca, redis.require_tls on."""
    import shutil
    import subprocess

    from helpers import free_port
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    d = tmp_path / "rtls"
    d.mkdir()
    _ca_and_server_cert(d)
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port),
         "--bind", "127.0.0.1", "--tls-cert-file", str(d / "redis.crt"),
         "--tls-key-file", str(d / "redis.key"),
         "--tls-ca-cert-file", str(d / "ca.crt"), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(d)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        flags = ("--redis.url=rediss://localhost:%d" % port,
                 "--redis.tls_ca=%s" % (d / "ca.crt"),
                 "--redis.require_tls=true")
        a = server_factory(*flags)
        b = server_factory(*flags)
        wait_until(lambda: ready(a) and ready(b), "TLS cluster not ready")

        async def go():
            wa, _ = await join_on(a, "aa", sync=(a, b))
            wb, boot = await join_on(b, "ab")
            assert boot["peers"] == [{"id": "aa"}]
            await wb.send(json.dumps({"type": "signal", "to": "aa"}))
            msgs = [await recv_json(wa), await recv_json(wa)]
            assert {"type": "signal", "to": "aa", "from": "ab"} in msgs, msgs
            await close_all([wa, wb])

        run(go())
        # a CA that did not sign the server: never up, /ready says why
        other = tmp_path / "other"
        other.mkdir()
        _ca_and_server_cert(other)
        c = server_factory("--redis.url=rediss://localhost:%d" % port,
                           "--redis.tls_ca=%s" % (other / "ca.crt"))
        time.sleep(1.0)
        r = http_get(c.port, "/ready")
        assert r.status == 503 and "redis" in r.json()["failing"], r.body
    finally:
        proc.kill()
        proc.wait(timeout=5)
