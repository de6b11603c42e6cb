"""The chat role's RTMP live streams (docs/chat.md "Live streams
(nginx-rtmp)" and the /api/get-stream-key, /api/streams and
/api/broadcast-status routes) against a real nginx with libnginx-mod-rtmp
and a real ffmpeg publisher.

nginx-rtmp's callbacks reach the chat server through rtmp.CallbackTap, a
byte-transparent TCP relay that records each callback and its answer, so
the refusal reason (403/409/429/503) is checked exactly. The chat server
runs on SQLite. Every wait is bounded; the only timing assertions are lower
bounds.

    cd tests/integration && PM_BIN=../../p2pmesh /usr/bin/python3 -m pytest -q test_chat_streams.py
"""

import asyncio
import re
import shutil
import subprocess
import time

import pytest

pytest.register_assert_rewrite("rtmp")

import rtmp  # noqa: E402
from chat_fixtures import Backend, ChatServer, Client, SqliteDB, close_all, register, run  # noqa: E402

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEXID = re.compile(r"^[0-9a-f]{8,64}$")


# ------------------------------------------------------------------ stack


class Stack:
    """A chat server, the callback tap in front of it and nginx-rtmp."""

    def __init__(self, tmp_path, server_factory, flags, update_timeout):
        self.tmp = tmp_path
        path = tmp_path / "chat.db"
        self.chat = ChatServer(server_factory, Backend("sqlite", "sqlite:%s" % path, SqliteDB(path)),
                               ["--chat.rate_max=0", "--chat.auth_rate_max=0", "--log.format=json"]
                               + list(flags), None)
        self.tap = rtmp.CallbackTap(self.chat.port)
        self.nginx = rtmp.Nginx(tmp_path / "nginx", self.tap.port, update_timeout=update_timeout)
        self.publishers = []

    def publish(self, key, seconds):
        p = rtmp.Publisher(self.nginx.url(key), seconds,
                           self.tmp / ("ffmpeg-%d.log" % len(self.publishers)))
        self.publishers.append(p)
        return p

    def log_events(self, event):
        return [o for o in self.chat.srv.logs() if o.get("event") == event]

    def diag(self):
        parts = [self.nginx.diag(),
                 "--- callbacks ---\n" + "\n".join(repr(e) for e in self.tap.calls()),
                 "--- tap errors: %r" % self.tap.errors]
        for i, p in enumerate(self.publishers):
            parts.append("--- ffmpeg %d rc=%s: %s\n%s" % (i, p.proc.returncode, p.url,
                                                         p.log_text()[-1500:]))
        parts.append("--- chat stdout (tail) ---\n" + self.chat.srv.stdout_text()[-3000:])
        return "\n".join(parts)

    def close(self):
        for p in self.publishers:
            p.kill()
        self.nginx.stop()
        self.tap.close()


@pytest.fixture
def stack(tmp_path, server_factory):
    """start(*chat_flags, update_timeout="2s") -> Stack; skips when nginx,
    the RTMP module or ffmpeg is missing."""
    reason = rtmp.missing()
    if reason:
        pytest.skip(reason)
    made = []

    def start(*flags, update_timeout="2s"):
        s = Stack(tmp_path, server_factory, flags, update_timeout)
        made.append(s)
        return s

    yield start
    for s in made:
        s.close()
        print(s.diag())  # shown by pytest for a failing test only


# ---------------------------------------------------------------- helpers


def get_key(chat, token):
    r = chat.api("POST", "/api/get-stream-key", token=token)
    assert r.status == 200, r
    key = r.json.get("streamKey")
    assert isinstance(key, str) and HEX32.match(key), r.json
    url = r.json.get("rtmpUrl")
    assert isinstance(url, str) and url.startswith("rtmp://") and url.endswith("/live"), r.json
    return key


def live(chat, token):
    r = chat.api("GET", "/api/streams", token=token)
    assert r.status == 200, r
    assert isinstance(r.json.get("streams"), list), r.json
    return r.json["streams"]


def status(chat):
    r = chat.api("GET", "/api/broadcast-status")
    assert r.status == 200, r
    return r.json


async def wait_exit(pub, timeout):
    """ffmpeg's exit status, waiting (without blocking the loop) up to timeout."""
    deadline = time.monotonic() + timeout
    while pub.running():
        if time.monotonic() >= deadline:
            pub.kill()
            raise AssertionError("ffmpeg still running after %.0fs: %s\n%s"
                                 % (timeout, pub.url, pub.log_text()))
        await asyncio.sleep(0.05)
    return pub.poll()


async def wait_call(tap, path, name, timeout=20.0, after=None):
    return await asyncio.to_thread(tap.wait_call, path, name, timeout, after)


async def refused(s, key, expect_status, expect_text):
    """Publish to key: nginx-rtmp must refuse it after our callback answered
    expect_status; returns the exchange."""
    t0 = time.monotonic()
    pub = s.publish(key, 5)
    ex = await wait_call(s.tap, "/stream/start", key, after=t0)
    assert ex.status == expect_status, (ex, ex.body)
    assert expect_text in ex.body.decode("utf-8", "replace"), (ex, ex.body)
    assert "location" not in ex.headers, ex
    rc = await wait_exit(pub, 20)
    assert rc != 0, "ffmpeg's refused publish to %s exited 0\n%s" % (key, pub.log_text())
    return ex


# ------------------------------------------------------------------ tests


def test_publish_renames_to_playback_id_and_announces(stack):
    s = stack("--chat.stream_cooldown=0s", update_timeout="2s")
    chat = s.chat
    token, _ = register(chat, "alice")
    viewer_token, _ = register(chat, "bob")

    async def body():
        viewer = await Client.connect(chat, viewer_token, "bob")
        try:
            key = get_key(chat, token)
            assert live(chat, token) == []
            pub = s.publish(key, 7)

            start = await wait_call(s.tap, "/stream/start", key)
            assert start.status == 302, (start, start.body)
            pid = start.headers.get("location")
            assert pid and HEXID.match(pid) and pid != key and key not in pid, start

            ev = await viewer.expect(type="stream_started", timeout=20)
            assert ev["playback_id"] == pid, ev
            assert ev["user"] == "alice", ev
            assert ev["playback_url"] == "/hls/%s.m3u8" % pid, ev

            streams = live(chat, viewer_token)
            assert [(x["user"], x["playbackId"], x["playbackUrl"]) for x in streams] == \
                [("alice", pid, "/hls/%s.m3u8" % pid)], streams
            assert isinstance(streams[0]["startedAt"], (int, float)) and streams[0]["startedAt"] > 0
            st = status(chat)
            assert st["activeStreams"] == 1 and st["available"] is True, st
            line = "publish redirect to '%s'" % pid
            deadline = time.monotonic() + 10
            while line not in s.nginx.log_text() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert line in s.nginx.log_text(), s.nginx.diag()

            # HLS shows up while the stream runs (or at the latest after it).
            deadline = time.monotonic() + 20
            while not s.nginx.playlists() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert s.nginx.playlists(), "no HLS playlist within 20 s\n" + s.nginx.diag()

            rc = await wait_exit(pub, 30)
            stopped = await viewer.expect(type="stream_stopped", timeout=20)
            assert stopped["playback_id"] == pid and stopped["user"] == "alice", stopped
            assert live(chat, token) == []
            st = status(chat)
            assert st["activeStreams"] == 0 and st["available"] is True, st

            # Independent end checks, reported together.
            problems = []
            if rc != 0:
                updates = s.tap.calls("/stream/update")
                problems.append(
                    "ffmpeg's accepted %ds publish ended with status %s instead of 0 (nginx dropped "
                    "it); on_update callbacks: %r; ffmpeg: %s"
                    % (pub.seconds, rc, updates, pub.log_text()[-400:]))
            files = s.nginx.hls_files()
            if "%s.m3u8" % pid not in files:
                problems.append("HLS playlist %s.m3u8 (the playback id) missing; hls dir: %r"
                                % (pid, files))
            leaked = [f for f in files if key in f]
            if leaked:
                problems.append("HLS files carry the stream key %s in their names: %r" % (key, leaked))
            assert not problems, "\n".join(problems)
        finally:
            await close_all([viewer])

    run(body(), timeout=80)


def test_invalid_key_is_refused(stack):
    s = stack(update_timeout="30s")
    chat = s.chat
    token, _ = register(chat, "alice")
    get_key(chat, token)  # alice has a key; this is not it
    bad = "0123456789abcdef0123456789abcdef"

    async def body():
        ex = await refused(s, bad, 403, "Invalid stream key")
        assert ex.form.get("call") == "publish", ex
        assert s.log_events("stream_refused"), s.chat.srv.stdout_text()[-2000:]
        assert "publish redirect" not in s.nginx.log_text(), s.nginx.diag()
        await asyncio.sleep(1.0)  # a (wrongly) accepted stream would write HLS by now
        assert s.nginx.playlists() == [], s.nginx.diag()
        assert s.nginx.hls_files() == [], s.nginx.diag()
        assert live(chat, token) == []
        assert status(chat)["activeStreams"] == 0
        assert s.tap.calls("/stream/stop") == [], s.tap.calls()

    run(body(), timeout=60)


def test_rotated_key_is_revoked(stack):
    s = stack(update_timeout="30s")
    chat = s.chat
    token, _ = register(chat, "alice")

    async def body():
        old = get_key(chat, token)
        new = get_key(chat, token)
        assert old != new
        await refused(s, old, 403, "Invalid stream key")
        assert live(chat, token) == []

        pub = s.publish(new, 3)
        ex = await wait_call(s.tap, "/stream/start", new)
        assert ex.status == 302 and ex.headers.get("location"), (ex, ex.body)
        pid = ex.headers["location"]
        assert [x["playbackId"] for x in live(chat, token)] == [pid]
        rc = await wait_exit(pub, 30)
        assert rc == 0, pub.log_text()
        await wait_call(s.tap, "/stream/stop", new)
        assert live(chat, token) == []

    run(body(), timeout=60)


def test_rotating_the_key_while_live_still_ends_the_stream(stack):
    # nginx-rtmp names the stream by the key it was published with in
    # on_update and on_publish_done; the key may be gone by then.
    s = stack(update_timeout="1s")
    chat = s.chat
    token, _ = register(chat, "alice")

    async def body():
        key = get_key(chat, token)
        pub = s.publish(key, 4)
        ex = await wait_call(s.tap, "/stream/start", key)
        assert ex.status == 302, (ex, ex.body)
        pid = ex.headers["location"]
        assert get_key(chat, token) != key  # rotated while live
        upd = await wait_call(s.tap, "/stream/update", key)
        assert upd.status == 200, (upd, upd.body)  # still known by its key
        rc = await wait_exit(pub, 30)
        assert rc == 0, pub.log_text()
        stop = await wait_call(s.tap, "/stream/stop", key)
        assert stop.status == 200
        assert live(chat, token) == []
        assert [x for x in live(chat, token) if x["playbackId"] == pid] == []

    run(body(), timeout=60)


def test_one_stream_per_user_and_cooldown(stack):
    cooldown = 5.0
    s = stack("--chat.stream_cooldown=%ds" % cooldown, update_timeout="30s")
    chat = s.chat
    token, _ = register(chat, "alice")

    async def body():
        c = await Client.connect(chat, token, "alice")
        try:
            key = get_key(chat, token)
            first = s.publish(key, 6)
            ex = await wait_call(s.tap, "/stream/start", key)
            assert ex.status == 302, (ex, ex.body)
            pid = ex.headers["location"]
            await c.expect(type="stream_started", playback_id=pid, timeout=20)

            # The same key again while live: 409, and the live stream survives.
            await refused(s, key, 409, "already have an active stream")
            assert first.running(), "the first publish died with the refused second one\n" + \
                first.log_text()
            assert [x["playbackId"] for x in live(chat, token)] == [pid]
            assert [e.name for e in s.tap.calls("/stream/stop")] == [], s.tap.calls()

            rc = await wait_exit(first, 30)
            assert rc == 0, first.log_text()
            stop = await wait_call(s.tap, "/stream/stop", key)
            assert stop.status == 200, stop
            await c.expect(type="stream_stopped", playback_id=pid, timeout=20)
            assert live(chat, token) == []

            # Inside the cooldown: 429.
            ex = await refused(s, key, 429, "cooldown")
            assert ex.t_request - stop.t_response < cooldown, \
                "the retry reached the server only %.1fs after the stop" % (ex.t_request - stop.t_response)
            assert live(chat, token) == []

            # After the cooldown: accepted again.
            wait = stop.t_response + cooldown + 0.5 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            t0 = time.monotonic()
            again = s.publish(key, 2)
            ex = await wait_call(s.tap, "/stream/start", key, after=t0)
            assert ex.status == 302, (ex, ex.body)
            pid2 = ex.headers["location"]
            assert pid2 != pid
            await c.expect(type="stream_started", playback_id=pid2, timeout=20)
            assert await wait_exit(again, 30) == 0, again.log_text()
            await c.expect(type="stream_stopped", playback_id=pid2, timeout=20)
        finally:
            await close_all([c])

    run(body(), timeout=80)


def test_global_stream_cap(stack):
    s = stack("--chat.max_streams=1", update_timeout="30s")
    chat = s.chat
    ta, _ = register(chat, "alice")
    tb, _ = register(chat, "bob")

    async def body():
        st = status(chat)
        assert st == {"activeStreams": 0, "maxStreams": 1, "available": True}, st
        ka, kb = get_key(chat, ta), get_key(chat, tb)
        pa = s.publish(ka, 5)
        ex = await wait_call(s.tap, "/stream/start", ka)
        assert ex.status == 302, (ex, ex.body)
        pid = ex.headers["location"]

        st = status(chat)
        assert st == {"activeStreams": 1, "maxStreams": 1, "available": False}, st

        await refused(s, kb, 503, "capacity")
        assert pa.running(), pa.log_text()
        assert [(x["user"], x["playbackId"]) for x in live(chat, tb)] == [("alice", pid)]

        assert await wait_exit(pa, 30) == 0, pa.log_text()
        await wait_call(s.tap, "/stream/stop", ka)
        st = status(chat)
        assert st == {"activeStreams": 0, "maxStreams": 1, "available": True}, st

    run(body(), timeout=60)


def test_max_stream_duration_drops_publisher(stack):
    max_s = 3.0
    s = stack("--chat.max_stream_duration=3s", update_timeout="1s")
    chat = s.chat
    token, _ = register(chat, "alice")

    async def body():
        c = await Client.connect(chat, token, "alice")
        try:
            key = get_key(chat, token)
            seconds = 20
            pub = s.publish(key, seconds)
            start = await wait_call(s.tap, "/stream/start", key)
            assert start.status == 302, (start, start.body)
            pid = start.headers["location"]
            await c.expect(type="stream_started", playback_id=pid, timeout=20)

            stopped = await c.expect(type="stream_stopped", playback_id=pid, timeout=18)
            # ffmpeg was cut off by nginx, not ended by -t.
            rc = await wait_exit(pub, 10)
            assert rc != 0, "ffmpeg ran its full %ds (status 0)\n%s" % (seconds, pub.log_text())
            assert stopped["user"] == "alice"
            assert live(chat, token) == []

            updates = s.tap.calls("/stream/update")
            dropped = [e for e in updates if e.status == 403]
            assert dropped, updates
            first = dropped[0]
            # The drop is the duration limit, not some other refusal, and it
            # did not come before the limit.
            assert "Maximum stream duration" in first.body.decode("utf-8", "replace"), \
                "on_update refused with %r; all updates: %r" % (first.body, updates)
            assert first.t_request - start.t_response >= max_s - 0.3, \
                "dropped %.1fs after the start (limit %.0fs); updates: %r" % (
                    first.t_request - start.t_response, max_s, updates)
            assert all(e.status == 200 for e in updates[:updates.index(first)]), updates
            assert s.log_events("stream_too_long"), s.chat.srv.stdout_text()[-2000:]
        finally:
            await close_all([c])

    run(body(), timeout=60)


def test_callbacks_refuse_callers_outside_rtmp_allow(server_factory, tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")

    def start(name, *flags):
        path = tmp_path / ("%s.db" % name)
        return ChatServer(server_factory, Backend("sqlite", "sqlite:%s" % path, SqliteDB(path)),
                          ["--chat.rate_max=0", "--chat.auth_rate_max=0"] + list(flags), None)

    def post(chat, path, form):
        r = subprocess.run([curl, "-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST",
                            "--max-time", "10", "-H", "Content-Type: application/x-www-form-urlencoded",
                            "--data", form, "http://127.0.0.1:%d%s" % (chat.port, path)],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        text, _, code = r.stdout.rpartition("\n")
        return int(code), text

    closed = start("closed", "--chat.rtmp_allow=10.0.0.0/8")
    token, _ = register(closed, "alice")
    key = get_key(closed, token)
    form = "app=live&call=publish&addr=127.0.0.1&name=%s&type=live" % key
    code, text = post(closed, "/stream/start", form)
    assert code == 403, (code, text)
    assert "rtmp_allow" in text, text
    assert post(closed, "/stream/update", "app=live&call=update_publish&name=%s" % key)[0] == 403
    assert post(closed, "/stream/stop", "app=live&call=publish_done&name=%s" % key)[0] == 403
    assert live(closed, token) == []

    # The same key with loopback allowed (the default list) is accepted:
    # the 403 above came from rtmp_allow, not from the key.
    opened = start("open")
    token, _ = register(opened, "alice")
    key = get_key(opened, token)
    code, text = post(opened, "/stream/start",
                      "app=live&call=publish&addr=127.0.0.1&name=%s&type=live" % key)
    assert code == 302, (code, text)
    assert [x["user"] for x in live(opened, token)] == ["alice"]
