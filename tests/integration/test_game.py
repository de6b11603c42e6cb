"""The game role on one node (docs/game.md): guest tokens, the WebSocket
protocol (authentication, errors, Ping), matchmaking (solo, duel, ffa,
custom games, queues), complete and consistent event streams (every bot
keeps its own model of the game from the Snapshot and the events and
checks each TickHash with its own FNV-1a), idempotent commands, resync and
reconnect, spectators, /health, /metrics, the web client and SIGTERM.

Servers run with short delays (start_delay 200ms, tick 50ms, ffa_wait
500ms); every wait is bounded.
"""

import asyncio
import re
import time

import jwt
import pytest

pytest.register_assert_rewrite("game_fixtures")

import helpers  # noqa: E402
from game_fixtures import (  # noqa: E402
    DIRS,
    GAME_SECRET,
    OPPOSITE,
    PERP,
    Bot,
    api,
    choose_direction,
    close_bots,
    comparable,
    ev_data,
    ev_kind,
    is_game_event,
    jwt_claims,
    kind,
    new_bot,
    now_ms,
    run,
    start_duel,
    state_hash,
)


# ------------------------------------------------------------ helpers


def inside(state, cell):
    return 0 <= cell[0] < state["width"] and 0 <= cell[1] < state["height"]


def check_initial_snapshot(state, players, food, width, height, tick_ms=None):
    """A fresh game's Snapshot: waiting, snakes of length 4, straight,
    heading into the board, inside it, not overlapping; food free cells."""
    assert state["status"] == "waiting", state
    assert state["width"] == width and state["height"] == height, state
    if tick_ms is not None:
        assert state["tick_ms"] == tick_ms, state
    assert sorted(s["user_id"] for s in state["snakes"]) == sorted(players), state
    assert len({s["id"] for s in state["snakes"]}) == len(players), state
    cells = set()
    for s in state["snakes"]:
        body = [tuple(c) for c in s["body"]]
        assert len(body) == 4, s
        assert s["alive"] is True and s["score"] == 0 and s["grow"] == 0, s
        assert s["direction"] in DIRS, s
        dx, dy = DIRS[s["direction"]]
        for a, b in zip(body, body[1:]):
            assert (a[0] - b[0], a[1] - b[1]) == (dx, dy), ("not straight behind its direction", s)
        for c in body:
            assert inside(state, c), s
            assert c not in cells, ("snakes overlap", state)
            cells.add(c)
        assert inside(state, (body[0][0] + dx, body[0][1] + dy)), ("heading out of the board", s)
    # the food is laid out when the game starts running (FoodSpawned
    # events before StatusUpdated running) or already in the waiting board
    assert len(state["food"]) in (0, food), state
    fcells = [tuple(c) for c in state["food"]]
    assert len(set(fcells)) == len(fcells), ("food on one cell twice", state)
    for c in fcells:
        assert inside(state, c) and c not in cells, ("food not on a free cell", state)


async def snapshot_state(bot, gid=None, timeout=5.0):
    ge = await bot.next_event("Snapshot", timeout, gid)
    st = ev_data(ge["event"])["state"]
    assert ge["tick"] == st["tick"], ("Snapshot labelled with another tick than its state", ge)
    return ge, st


async def wait_running(bot, timeout=5.0, food=None):
    """StatusUpdated running; then the board holds food items (when given)."""
    ge = await bot.next_event("StatusUpdated", timeout)
    assert ev_data(ge["event"]) == {"status": "running"}, ge
    if food is not None:
        st = bot.model().state
        assert len(st["food"]) == food, ("food when the game starts", st)
        check_food(st)
    return ge


def check_food(st):
    """Food on distinct free cells of the board."""
    cells = {tuple(c) for s in st["snakes"] if s["alive"] for c in s["body"]}
    fcells = [tuple(c) for c in st["food"]]
    assert len(set(fcells)) == len(fcells), ("food on one cell twice", st)
    for c in fcells:
        assert inside(st, c) and c not in cells, ("food not on a free cell", st)


async def wait_game_end(bot, timeout=15.0):
    """The GameEnded event of the bot's game (read position untouched)."""
    _, (t, _, m) = await bot.next_entry(
        lambda m: is_game_event(m, "GameEnded", bot.game_id), timeout, since=0)
    return m["GameEvent"]


def my_turns(bot, since, gid=None):
    """Directions of SnakeTurned events of the bot's own snake after index since."""
    gid = bot.game_id if gid is None else gid
    me = bot.my_snake(gid)
    out = []
    for _, _, m in bot.msgs[since:]:
        if is_game_event(m, "SnakeTurned", gid):
            d = ev_data(m["GameEvent"]["event"])
            if d["snake_id"] == me["id"]:
                out.append(d["direction"])
    return out


def poll(fn, timeout=3.0, interval=0.05):
    """fn() until truthy; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


async def apoll(fn, timeout=3.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        await asyncio.sleep(interval)


def check_result(bot, ended):
    """GameEnded against the bot's model: winner = the survivor (None when
    none), one score per snake with its user and food eaten."""
    m = bot.model()
    st = m.state
    alive = [s["id"] for s in st["snakes"] if s["alive"]]
    assert len(alive) <= (1 if len(st["snakes"]) > 1 else 0), (alive, st)
    if len(st["snakes"]) > 1:
        assert ended["winner"] == (alive[0] if alive else None), (ended, alive)
    scores = {e["snake_id"]: e for e in ended["scores"]}
    assert sorted(scores) == sorted(s["id"] for s in st["snakes"]), (ended, st)
    for s in st["snakes"]:
        e = scores[s["id"]]
        assert e["user_id"] == s["user_id"] and e["score"] == s["score"], (e, s)
    assert st["status"] == "ended", st


# ------------------------------------------------------------ guests


def test_guest_tokens(game_factory):
    gs = game_factory("--jwt.secret=" + GAME_SECRET, "--game.token_ttl=2h")
    st, hdr, js, raw = api(gs.port, "POST", "/api/auth/guest", body={"nickname": "alice"})
    assert st == 200, raw
    assert set(js) >= {"token", "user"}, js
    u = js["user"]
    assert u["username"] == "alice" and u["is_guest"] is True, u
    assert re.fullmatch(r"g-.+", u["id"]), u
    c = jwt.decode(js["token"], GAME_SECRET, algorithms=["HS256"])  # verifies signature and exp
    assert c["sub"] == u["id"] and c["username"] == "alice" and c["is_guest"] is True, c
    assert abs(c["iat"] - time.time()) < 60, c
    assert c["exp"] - c["iat"] == 7200, ("exp = iat + game.token_ttl", c)

    # without a body, and with an empty object: guest-XXXX, distinct ids
    st, _, js1, raw = api(gs.port, "POST", "/api/auth/guest")
    assert st == 200, raw
    st, _, js2, raw = api(gs.port, "POST", "/api/auth/guest", body={})
    assert st == 200, raw
    # an empty nickname (the web client's empty field) counts as missing
    st, _, js3, raw = api(gs.port, "POST", "/api/auth/guest", body={"nickname": ""})
    assert st == 200, raw
    for j in (js1, js2, js3):
        assert re.fullmatch(r"guest-[A-Za-z0-9]+", j["user"]["username"]), j
        assert j["user"]["is_guest"] is True
        assert jwt_claims(j["token"])["sub"] == j["user"]["id"]
    assert len({j["user"]["id"] for j in (js, js1, js2, js3)}) == 4

    for bad in ("ab", "x" * 21, "_alice", "alice-", "bad name", "al!ce", 42):
        st, _, j, raw = api(gs.port, "POST", "/api/auth/guest", body={"nickname": bad})
        assert st == 400, (bad, st, raw)
        assert isinstance(j, dict) and isinstance(j.get("message"), str) and j["message"], (bad, raw)
    st, _, j, raw = api(gs.port, "POST", "/api/auth/guest", raw=b"{not json")
    assert st == 400, raw
    for good in ("bob", "a" * 20, "x_y-z9"):
        st, _, j, raw = api(gs.port, "POST", "/api/auth/guest", body={"nickname": good})
        assert st == 200 and j["user"]["username"] == good, (good, raw)


def test_guest_token_authenticates_over_ws(game):
    token, user = game.guest("carol")

    async def go():
        b = Bot("carol", token)
        try:
            a = await b.connect(game.ws_url)
            assert a["user_id"] == user["id"], (a, user)
            assert a["username"] == "carol", a
            assert a["protocol_version"] == 1, a
            assert a.get("node_id") not in (None, ""), a
            assert str(a["node_id"]) == str(game.node_id), (a, game.node_id)
            await b.ping_roundtrip()
        finally:
            await b.close()

    run(go())


# ------------------------------------------------------------ protocol


async def expect_denied(url, first_message, name):
    b = Bot(name)
    await b.connect(url, authenticate=False)
    try:
        await b.send(first_message)
        m = await b.next(lambda m: True, 5)
        assert kind(m) == "AccessDenied", (name, m)
        assert isinstance(m["AccessDenied"].get("reason"), str), m
        code, _ = await b.wait_closed(5)
        assert code == 1008, (name, code)
        assert not b.find_all(lambda m: kind(m) == "Authenticated"), b.tail()
    finally:
        await b.close()


def test_access_denied(game_factory):
    gs = game_factory("--jwt.secret=" + GAME_SECRET)
    token, user = gs.guest()
    now = int(time.time())
    forged = jwt.encode({"sub": user["id"], "username": "mallory", "is_guest": True,
                         "iat": now, "exp": now + 3600}, "another-secret-0123456789abcdefghijkl",
                        algorithm="HS256")
    expired = jwt.encode({"sub": user["id"], "username": user["username"], "is_guest": True,
                          "iat": now - 7200, "exp": now - 3600}, GAME_SECRET, algorithm="HS256")

    async def go():
        await expect_denied(gs.ws_url, {"Authenticate": {"token": token, "protocol_version": 2}},
                            "version 2")
        await expect_denied(gs.ws_url, {"Authenticate": {"token": token, "protocol_version": 0}},
                            "version 0")
        await expect_denied(gs.ws_url, {"Authenticate": {"token": "not-a-jwt",
                                                         "protocol_version": 1}}, "garbage token")
        await expect_denied(gs.ws_url, {"Authenticate": {"token": forged, "protocol_version": 1}},
                            "forged token")
        await expect_denied(gs.ws_url, {"Authenticate": {"token": expired, "protocol_version": 1}},
                            "expired token")
        await expect_denied(gs.ws_url, {"QueueForMatch": {"mode": "solo"}}, "queue first")
        await expect_denied(gs.ws_url, "LeaveQueue", "LeaveQueue first")
        await expect_denied(gs.ws_url, {"JoinGame": 1}, "JoinGame first")
        # and the good token still works
        b = Bot("ok", token)
        try:
            a = await b.connect(gs.ws_url)
            assert a["user_id"] == user["id"]
        finally:
            await b.close()

    run(go())


def test_ping_before_authenticate_is_denied(game):
    """docs/game.md: Authenticate "must come first"; any other message
    before it is an AccessDenied and close 1008 (a Ping included)."""
    run(expect_denied(game.ws_url, {"Ping": {"client_time": 1}}, "Ping first"))


def test_malformed_and_unknown_messages_keep_the_socket(game):
    async def go():
        b = await new_bot(game, "b")
        try:
            for bad in ("{not json", '"NoSuchMessage"', '{"Frobnicate":{"x":1}}', "[1,2]",
                        '{"QueueForMatch":{"mode":"chess"}}', '{"JoinGame":"abc"}', "42"):
                mark = b.mark()
                await b.send_raw(bad)
                m = await b.next(lambda m: kind(m) in ("Error", "AccessDenied"), 5, since=mark)
                assert kind(m) == "Error", (bad, m)
                assert isinstance(m["Error"].get("reason"), str) and m["Error"]["reason"], (bad, m)
                pong = await b.ping_roundtrip()
                assert b.closed is None, (bad, b.closed)
                assert isinstance(pong["server_time"], int)
        finally:
            await b.close()

    run(go())


def test_binary_frame_is_closed_1003(game):
    async def go():
        b = await new_bot(game, "bin")
        try:
            await b.ws.send(b"\x00\x01binary")
            code, _ = await b.wait_closed(5)
            assert code == 1003, code
        finally:
            await b.close()

    run(go())


def test_ping_pong(game):
    async def go():
        b = await new_bot(game, "p")
        try:
            for ct in (0, 123456789, now_ms()):
                await b.send({"Ping": {"client_time": ct}})
                m = await b.next(lambda m: kind(m) == "Pong", 5)
                assert m["Pong"]["client_time"] == ct, m
                assert abs(m["Pong"]["server_time"] - now_ms()) < 5000, m
                assert set(m["Pong"]) == {"client_time", "server_time"}, m
        finally:
            await b.close()

    run(go())


# ------------------------------------------------------------ solo


def test_solo_game_from_queue_to_wall(game_factory):
    gs = game_factory("--game.width=20", "--game.height=20")

    async def go():
        b = await new_bot(gs, "solo", "solo_one")
        try:
            await b.queue("solo")
            i, (t_match, _, mf) = await b.next_entry(lambda m: kind(m) == "MatchFound", 5)
            gid = b.game_id = mf["MatchFound"]["game_id"]
            ge, st = await snapshot_state(b)
            check_initial_snapshot(st, [b.user_id], 5, 20, 20, tick_ms=50)
            b.mode = "autopilot"
            _, (t_run, _, _) = await b.next_entry(
                lambda m: is_game_event(m, "StatusUpdated", gid), 5)
            assert b.model().state["status"] == "running"
            assert len(b.model().state["food"]) == 5, b.model().state
            check_food(b.model().state)
            assert t_run - t_match >= 0.15, ("runs before game.start_delay", t_run - t_match)
            assert t_run - t_match < 2.0, t_run - t_match

            # listed while it runs
            g = gs.game(gid)
            assert g is not None, gs.games()
            assert g["mode"] == "solo" and g["status"] in ("running", "waiting"), g
            assert g["players"] == [b.user_id], g
            assert str(g["owner"]) == str(gs.node_id), (g, gs.node_id)

            await b.sleep_ticks(40)  # 2 s of steering
            m = b.model()
            ticks = [t for t, _ in m.moved_ticks]
            assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), ("a Moved per tick", ticks)
            times = [t for _, t in m.moved_ticks]
            per_tick = (times[-1] - times[0]) / (len(times) - 1)
            assert 0.025 <= per_tick <= 0.1, ("game.tick is 50ms", per_tick)
            assert my_turns(b, 0), "the autopilot never turned (steering had no effect?)"
            assert m.state["snakes"][0]["alive"], m.state

            b.mode = "crash"
            died = await b.next_event("SnakeDied", 10)
            d = ev_data(died["event"])
            me = b.my_snake()
            assert (d["snake_id"], d["cause"]) == (me["id"], "OutOfBounds"), (d, me)
            other_field = d.get("other", "missing")  # checked last (see below)
            head = me["body"][0]
            assert not inside(m.state, head), ("died OutOfBounds with its head inside", me)
            ended = await b.next_event("StatusUpdated", 5)
            assert ev_data(ended["event"]) == {"status": "ended"}, ended
            ge_end = await b.next_event("GameEnded", 5)
            res = ev_data(ge_end["event"])
            assert res["scores"] == [{"snake_id": me["id"], "user_id": b.user_id,
                                      "score": me["score"]}], (res, me)
            assert me["score"] == len(me["body"]) + me["grow"] - 4, me
            # GameEnded is the last event of the game
            await asyncio.sleep(0.4)
            after = [x for x in b.msgs[b.pos:] if is_game_event(x[2], None, gid)]
            assert not after, [x[2] for x in after]

            m.assert_clean("solo")
            assert m.hash_ok >= 1, ("no TickHash in 2 s of play", m.hash_ok)
            seqs = [s for s, _, _ in m.events]
            assert seqs == list(range(m.snapshots[0]["seq"] + 1, seqs[-1] + 1)), "stream_seq"
            assert poll(lambda: gs.game(gid) is None, 3), ("ended game still listed", gs.games())
            assert other_field is None, ("SnakeDied.other of a wall death is null", d)
        finally:
            await b.close()

    run(go())


# ------------------------------------------------------------ duel


def test_duel_played_to_the_end(game_factory):
    gs = game_factory("--game.width=24", "--game.height=24")

    async def go():
        a = await new_bot(gs, "a", "duel_a")
        b = await new_bot(gs, "b", "duel_b")
        try:
            await a.queue("duel")
            q = await a.next(lambda m: kind(m) == "QueueUpdate", 5)
            assert q == {"QueueUpdate": {"position": 1}}, q
            await b.queue("duel")
            gid = await a.matched()
            assert await b.matched() == gid
            _, sa = await snapshot_state(a)
            _, sb = await snapshot_state(b)
            check_initial_snapshot(sa, [a.user_id, b.user_id], 7, 24, 24)
            assert comparable(sa) == comparable(sb), (sa, sb)
            g = gs.game(gid)
            assert g["mode"] == "duel" and sorted(g["players"]) == sorted([a.user_id, b.user_id]), g
            a.mode = b.mode = "autopilot"
            await wait_running(a, food=7)
            await wait_running(b, food=7)
            await a.sleep_ticks(50, timeout=10)
            assert len(a.model().state["food"]) == 7, a.model().state
            check_food(a.model().state)
            for bot in (a, b):
                assert bot.my_snake()["alive"], ("died while steering", bot.name, bot.model().state)
            b.mode = "crash"
            ea = await wait_game_end(a, 15)
            eb = await wait_game_end(b, 5)
            assert ea == eb, (ea, eb)
            res = ev_data(ea["event"])
            check_result(a, res)
            check_result(b, res)
            assert comparable(a.model().state) == comparable(b.model().state)
            died = [ev_data(e[2]["event"]) for e in a.game_events()
                    if ev_kind(e[2]["event"]) == "SnakeDied"]
            assert died, "a game ended without a death"
            # the suicide (b) normally dies first: the survivor a wins
            if res["winner"] is not None:
                assert res["winner"] in [s["id"] for s in a.model().state["snakes"]]
            for bot in (a, b):
                bot.model().assert_clean(bot.name)
                assert bot.model().hash_ok >= 2, (bot.name, bot.model().hash_ok)
            # identical streams
            ma, mb = dict((s, (t, e)) for s, t, e in a.model().events), \
                dict((s, (t, e)) for s, t, e in b.model().events)
            assert max(ma) == max(mb)
            lo = max(min(ma), min(mb))
            for s in range(lo, max(ma) + 1):
                assert ma[s] == mb[s], (s, ma.get(s), mb.get(s))
            assert poll(lambda: gs.game(gid) is None, 3), gs.games()
        finally:
            await close_bots([a, b])

    run(go(), timeout=90)


# ------------------------------------------------------------ commands


def test_game_commands_are_idempotent(game_factory):
    gs = game_factory("--game.width=60", "--game.height=60", "--game.tick=100ms")

    async def go():
        b = await new_bot(gs, "cmd")
        try:
            await b.queue("solo")
            gid = await b.matched()
            _, st = await snapshot_state(b)
            await wait_running(b)
            await b.sleep_ticks(1)
            me = b.my_snake()
            d0 = me["direction"]
            x = max(PERP[d0], key=lambda d: _run(b.model().state, me, d))

            def cmd(seq, direction):
                return {"GameCommand": {"command_id": {"game_id": gid, "seq": seq},
                                        "command": {"Turn": {"direction": direction}}}}

            # 1. the same command three times: one turn
            mark = b.mark()
            for _ in range(3):
                await b.send(cmd(1, x))
            await b.ping_roundtrip()
            await b.sleep_ticks(4)
            assert my_turns(b, mark) == [x], b.tail(20)

            # 2. a new command and a resend of the old one: only the new one
            mark = b.mark()
            await b.send(cmd(2, d0))
            await b.send(cmd(1, x))
            await b.send(cmd(2, d0))
            await b.ping_roundtrip()
            await b.sleep_ticks(4)
            assert my_turns(b, mark) == [d0], ("a resent seq was applied", b.tail(20))

            # 3. a lower seq after a higher one is ignored
            mark = b.mark()
            await b.send(cmd(10, x))
            await b.ping_roundtrip()
            await b.sleep_ticks(3)
            assert my_turns(b, mark) == [x], b.tail(20)
            mark = b.mark()
            await b.send(cmd(5, d0))
            await b.ping_roundtrip()
            await b.sleep_ticks(4)
            assert my_turns(b, mark) == [], ("seq 5 after 10 was applied", b.tail(20))
            # while a higher seq still turns
            mark = b.mark()
            await b.send(cmd(11, d0))
            await b.sleep_ticks(3)
            assert my_turns(b, mark) == [d0], b.tail(20)
            assert b.my_snake()["alive"]
            b.model().assert_clean("cmd")
        finally:
            await b.close()

    run(go())


def test_turn_rules(game_factory):
    """A reversal or a turn to the current direction is ignored; turns
    queue (at most one applied per tick)."""
    gs = game_factory("--game.width=60", "--game.height=60", "--game.tick=100ms")

    async def go():
        b = await new_bot(gs, "rules")
        try:
            await b.queue("solo")
            await b.matched()
            await snapshot_state(b)
            await wait_running(b)
            await b.sleep_ticks(1)
            d0 = b.my_snake()["direction"]
            mark = b.mark()
            await b.turn(OPPOSITE[d0])
            await b.turn(d0)
            await b.ping_roundtrip()
            await b.sleep_ticks(4)
            assert my_turns(b, mark) == [], b.tail(20)
            # two turns sent at once: applied on two consecutive ticks
            x = PERP[d0][0]
            mark = b.mark()
            await b.turn(x)
            await b.turn(d0)
            await b.ping_roundtrip()
            await b.sleep_ticks(4)
            turns = [(e[2]["tick"], ev_data(e[2]["event"])["direction"])
                     for e in b.game_events(since=mark) if ev_kind(e[2]["event"]) == "SnakeTurned"]
            assert [d for _, d in turns] == [x, d0], turns
            assert turns[1][0] == turns[0][0] + 1, ("one turn per tick", turns)
            b.model().assert_clean("rules")
        finally:
            await b.close()

    run(go())


# ------------------------------------------------------------ resync


def test_resync_and_reconnect(game_factory):
    gs = game_factory("--game.width=30", "--game.height=30")

    async def go():
        b = await new_bot(gs, "re", "resyncer")
        try:
            await b.queue("solo")
            gid = await b.matched()
            await snapshot_state(b)
            b.mode = "autopilot"
            await wait_running(b)
            await b.sleep_ticks(20)

            await b.send({"RequestResync": {"game_id": gid}})
            await b.next_event("Snapshot", 5)
            m = b.model()
            snap = m.snapshots[-1]
            assert snap["prev_seq"] == snap["seq"], (
                "a Snapshot carries the number of the last broadcast event", snap["prev_seq"],
                snap["seq"])
            assert comparable(snap["prev_state"]) == comparable(snap["state"]), snap
            assert state_hash(snap["prev_state"]) == state_hash(snap["state"])
            await b.sleep_ticks(3)
            m.assert_clean("before reconnect")

            # reconnect: a new socket, the same token, JoinGame
            tick_before = m.state["tick"]
            await b.close()
            assert b.closed is not None
            a = await b.connect(gs.ws_url)
            assert a["user_id"] == b.guest_user["id"]
            m.awaiting = True
            mark = b.mark()
            b.pos = mark
            await b.send({"JoinGame": gid})
            ge = await b.next_event("Snapshot", 5)
            st = ev_data(ge["event"])["state"]
            assert st["tick"] >= tick_before, (st["tick"], tick_before)
            assert st["status"] == "running", st
            assert b.my_snake()["alive"], st
            # its commands still steer its snake
            b.mode = None
            await b.sleep_ticks(1)
            me = b.my_snake()
            want = choose_direction(m.state, me, me["direction"])
            if want == me["direction"]:
                want = max(PERP[me["direction"]], key=lambda d: _run(m.state, me, d))
            mark = b.mark()
            await b.turn(want)
            await b.sleep_ticks(3)
            assert my_turns(b, mark) == [want], b.tail(20)
            b.mode = "autopilot"
            ok_before = m.hash_ok
            await b.next_event("TickHash", 3)
            assert m.hash_ok == ok_before + 1, m.problems()
            m.assert_clean("after reconnect")
        finally:
            await b.close()

    run(go())


def _run(state, me, d):
    dx, dy = DIRS[d]
    x, y = me["body"][0]
    n = 0
    while 0 <= x + dx < state["width"] and 0 <= y + dy < state["height"]:
        x, y, n = x + dx, y + dy, n + 1
    return n


# ------------------------------------------------------------ spectators


def test_spectator_sees_the_same_events_and_cannot_steer(game_factory):
    gs = game_factory("--game.width=30", "--game.height=30")

    async def go():
        p = await new_bot(gs, "player")
        s = await new_bot(gs, "spectator")
        try:
            await p.queue("solo")
            gid = await p.matched()
            await snapshot_state(p)
            p.mode = "autopilot"
            await wait_running(p)
            await p.sleep_ticks(5)
            await s.send({"SpectateGame": gid})
            s.game_id = gid
            _, sst = await snapshot_state(s)
            assert sst["status"] == "running", sst
            await p.sleep_ticks(25)
            # the spectator's command has no effect
            p.mode = None
            await p.sleep_ticks(1)
            me = p.my_snake()
            mark = p.mark()
            await s.turn(PERP[me["direction"]][0], gid, seq=now_ms())
            await s.ping_roundtrip()
            await p.sleep_ticks(4)
            assert my_turns(p, mark) == [], ("a spectator's GameCommand turned the snake",
                                             p.tail(20))
            p.mode = "crash"
            end_p = await wait_game_end(p, 10)
            end_s = await wait_game_end(s, 5)
            assert end_p == end_s
            mp, ms = p.model(), s.model()
            mp.assert_clean("player")
            ms.assert_clean("spectator")
            assert ms.hash_ok >= 1
            ep = {q: (t, e) for q, t, e in mp.events}
            es = {q: (t, e) for q, t, e in ms.events}
            assert es and min(es) == s.model().snapshots[0]["seq"] + 1
            for q, v in es.items():
                assert ep.get(q) == v, (q, ep.get(q), v)
            assert max(es) == max(ep)
            assert comparable(mp.state) == comparable(ms.state)
        finally:
            await close_bots([p, s])

    run(go())


# ------------------------------------------------------------ ffa, custom


def test_ffa_starts_after_ffa_wait(game_factory):
    gs = game_factory("--game.width=30", "--game.height=30")

    async def go():
        bots = [await new_bot(gs, "f%d" % i) for i in range(3)]
        try:
            await bots[0].queue("ffa")
            q = await bots[0].next(lambda m: kind(m) == "QueueUpdate", 5)
            assert q["QueueUpdate"]["position"] == 1, q
            t2 = time.monotonic()
            await bots[1].queue("ffa")
            await bots[2].queue("ffa")
            gids = set()
            times = []
            for b in bots:
                _, (t, _, mf) = await b.next_entry(lambda m: kind(m) == "MatchFound", 5)
                b.game_id = mf["MatchFound"]["game_id"]
                gids.add(b.game_id)
                times.append(t)
            assert len(gids) == 1, gids
            waited = min(times) - t2
            assert waited >= 0.4, ("ffa started before game.ffa_wait (500ms)", waited)
            assert waited < 3.0, waited
            states = [(await snapshot_state(b))[1] for b in bots]
            check_initial_snapshot(states[0], [b.user_id for b in bots], 9, 30, 30)
            assert all(comparable(s) == comparable(states[0]) for s in states)
            for b in bots:
                await wait_running(b, food=9)
            for b in bots:
                b.mode = "crash"
            ends = [await wait_game_end(b, 15) for b in bots]
            assert ends[0] == ends[1] == ends[2]
            for b in bots:
                check_result(b, ev_data(ends[0]["event"]))
                b.model().assert_clean(b.name)
        finally:
            await close_bots(bots)

    run(go())


def test_custom_game_starts_when_full(game_factory):
    gs = game_factory()

    async def go():
        a = await new_bot(gs, "creator")
        b = await new_bot(gs, "joiner")
        c = await new_bot(gs, "late")
        try:
            await a.send({"CreateCustomGame": {"width": 20, "height": 15, "max_players": 2}})
            cc = (await a.next(lambda m: kind(m) in ("CustomGameCreated", "Error"), 5))
            assert kind(cc) == "CustomGameCreated", cc
            gid, code = cc["CustomGameCreated"]["game_id"], cc["CustomGameCreated"]["game_code"]
            assert isinstance(code, str) and code, cc
            a.game_id = b.game_id = gid
            await b.send({"JoinCustomGame": {"code": code}})
            cj = await b.next(lambda m: kind(m) in ("CustomGameJoined", "Error"), 5)
            assert cj == {"CustomGameJoined": {"game_id": gid}}, cj
            _, sa = await snapshot_state(a, gid)
            _, sb = await snapshot_state(b, gid)
            # later snapshots replace earlier ones: the last one before running counts
            await wait_running(a)
            await wait_running(b)
            for bot in (a, b):
                st = bot.model(gid).state
                assert st["width"] == 20 and st["height"] == 15, st
                assert sorted(s["user_id"] for s in st["snakes"]) == sorted([a.user_id, b.user_id])
                for s in st["snakes"]:
                    for cell in s["body"]:
                        assert inside(st, cell), st
            await c.send({"JoinCustomGame": {"code": code}})
            e = await c.next(lambda m: kind(m) in ("CustomGameJoined", "Error"), 5)
            assert kind(e) == "Error", ("joined a full, started game", e)
            await c.send({"JoinCustomGame": {"code": "NOPE" + code}})
            e = await c.next(lambda m: kind(m) in ("CustomGameJoined", "Error"), 5)
            assert kind(e) == "Error", e
            await a.sleep_ticks(3)
            a.model(gid).assert_clean("creator")
        finally:
            await close_bots([a, b, c])

    run(go())


def test_custom_game_started_by_its_creator(game_factory):
    gs = game_factory()

    async def go():
        a = await new_bot(gs, "creator")
        b = await new_bot(gs, "joiner")
        try:
            await a.send({"CreateCustomGame": {"width": 25, "height": 20, "max_players": 3,
                                               "tick_ms": 80}})
            cc = await a.next(lambda m: kind(m) in ("CustomGameCreated", "Error"), 5)
            assert kind(cc) == "CustomGameCreated", cc
            gid, code = cc["CustomGameCreated"]["game_id"], cc["CustomGameCreated"]["game_code"]
            a.game_id = b.game_id = gid
            await b.send({"JoinCustomGame": {"code": code}})
            cj = await b.next(lambda m: kind(m) in ("CustomGameJoined", "Error"), 5)
            assert cj == {"CustomGameJoined": {"game_id": gid}}, cj
            # not full (3 players): it waits for its creator
            await asyncio.sleep(0.6)
            assert not b.find_all(lambda m: is_game_event(m, "StatusUpdated", gid)), b.tail()
            mark = b.mark()
            await b.send("StartCustomGame")
            e = await b.next(lambda m: kind(m) == "Error" or is_game_event(m, "StatusUpdated", gid),
                             5, since=mark)
            assert kind(e) == "Error", ("a non-creator started the game", e)
            await a.send("StartCustomGame")
            await wait_running(a)
            await wait_running(b)
            st = a.model(gid).state
            assert (st["width"], st["height"], st["tick_ms"]) == (25, 20, 80), st
            assert len(st["snakes"]) == 2, st
            await a.sleep_ticks(10)
            times = [t for _, t in a.model(gid).moved_ticks]
            per = (times[-1] - times[0]) / (len(times) - 1)
            assert 0.05 <= per <= 0.15, ("tick_ms 80", per)
            g = gs.game(gid)
            assert g is not None and g["mode"] == "custom", g
        finally:
            await close_bots([a, b])

    run(go())


def test_queue_positions_and_leave(game):
    async def go():
        a = await new_bot(game, "qa")
        b = await new_bot(game, "qb")
        try:
            await a.queue("duel")
            q = await a.next(lambda m: kind(m) == "QueueUpdate", 5)
            assert q == {"QueueUpdate": {"position": 1}}, q
            await a.send("LeaveQueue")
            m = await a.next(lambda m: kind(m) in ("QueueLeft", "Error", "MatchFound"), 5)
            assert m == "QueueLeft", m
            await b.queue("duel")
            q = await b.next(lambda m: kind(m) == "QueueUpdate", 5)
            assert q == {"QueueUpdate": {"position": 1}}, ("a left the queue", q)
            await asyncio.sleep(0.5)
            assert not a.find_all(lambda m: kind(m) == "MatchFound"), a.tail()
            assert not b.find_all(lambda m: kind(m) == "MatchFound"), b.tail()
            # a queues again: a match
            await a.queue("duel")
            ga = await a.matched()
            gb = await b.matched()
            assert ga == gb
            # queueing for another mode moves a user between queues
            c = await new_bot(game, "qc")
            d = await new_bot(game, "qd")
            try:
                await c.queue("duel")
                await c.next(lambda m: kind(m) == "QueueUpdate", 5)
                await c.queue("ffa")
                await c.next(lambda m: kind(m) == "QueueUpdate", 5)
                await d.queue("duel")
                q = await d.next(lambda m: kind(m) == "QueueUpdate", 5)
                assert q == {"QueueUpdate": {"position": 1}}, ("c still in the duel queue", q)
                await asyncio.sleep(0.3)
                assert not d.find_all(lambda m: kind(m) == "MatchFound"), d.tail()
            finally:
                await close_bots([c, d])
        finally:
            await close_bots([a, b])

    run(go())


# ------------------------------------------------------------ HTTP


def test_health_and_metrics_follow_games(game_factory):
    gs = game_factory("--game.width=30", "--game.height=30")
    st, h = gs.health()
    assert st == 200, h
    assert h["raft_state"] == "single", h
    assert h["games_owned"] == 0 and h["players"] == 0, h
    assert h.get("node_id") not in (None, ""), h
    text0, samples0 = helpers.get_metrics(gs.port)
    game0 = {(n, tuple(sorted(l.items()))): v for n, l, v in samples0
             if n.startswith("p2pmesh_game_")}
    assert game0, "no p2pmesh_game_* series:\n" + text0[:2000]

    async def go():
        b = await new_bot(gs, "h")
        try:
            await b.queue("solo")
            await b.matched()
            b.mode = "autopilot"
            await b.next_event("Snapshot", 5)
            await wait_running(b)
            await b.sleep_ticks(5)
            h1 = poll(lambda: (lambda r: r[1] if r[1]["games_owned"] == 1 and r[1]["players"] >= 1
                               else None)(gs.health()), 3)
            assert h1, gs.health()
            _, samples1 = helpers.get_metrics(gs.port)
            game1 = {(n, tuple(sorted(l.items()))): v for n, l, v in samples1
                     if n.startswith("p2pmesh_game_")}
            assert game1 != game0, "no p2pmesh_game_* series changed while a game runs"
            b.mode = "crash"
            await wait_game_end(b, 10)
        finally:
            await b.close()

    run(go())
    h2 = poll(lambda: (lambda r: r[1] if r[1]["games_owned"] == 0 and r[1]["players"] == 0
                       else None)(gs.health()), 3)
    assert h2, gs.health()
    r = helpers.http_get(gs.port, "/ready")
    assert r.status == 200, r


def test_web_client_is_served(game):
    r = helpers.http_get(game.port, "/")
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("text/html"), r.headers
    body = r.body.decode("utf-8", "replace")
    assert "<canvas" in body.lower(), body[:500]
    assert "app.js" in body, body[:2000]
    js = helpers.http_get(game.port, "/app.js")
    assert js.status == 200 and b"WebSocket" in js.body, js
    assert "javascript" in js.headers.get("content-type", ""), js.headers
    css = helpers.http_get(game.port, "/app.css")
    assert css.status == 200 and css.headers.get("content-type", "").startswith("text/css"), css


def test_games_list_for_spectators(game):
    st, js = helpers.http_get(game.port, "/api/games").status, game.games()
    assert st == 200 and js == [], js

    async def go():
        a = await new_bot(game, "la")
        b = await new_bot(game, "lb")
        try:
            gid = await start_duel(game, a, b)
            a.mode = b.mode = "autopilot"
            g = game.game(gid)
            assert g is not None, game.games()
            assert set(g) >= {"id", "mode", "status", "players", "owner"}, g
            assert g["mode"] == "duel" and g["status"] in ("waiting", "running"), g
            assert sorted(g["players"]) == sorted([a.user_id, b.user_id]), g
        finally:
            await close_bots([a, b])

    run(go())


# ------------------------------------------------------------ SIGTERM


def test_sigterm_sends_server_shutdown_then_1001(game_factory):
    gs = game_factory("--game.width=30", "--game.height=30")

    async def go():
        idle = await new_bot(gs, "idle")
        b = await new_bot(gs, "player")
        try:
            await b.queue("solo")
            await b.matched()
            b.mode = "autopilot"
            await b.next_event("Snapshot", 5)
            await wait_running(b)
            await b.sleep_ticks(3)
            gs.sigterm()
            for bot in (b, idle):
                m = await bot.next(lambda m: kind(m) == "ServerShutdown", 5)
                d = m["ServerShutdown"]
                assert isinstance(d.get("reason"), str), m
                assert isinstance(d.get("grace_period_seconds"), (int, float)), m
                code, _ = await bot.wait_closed(8)
                assert code == 1001, (bot.name, code)
                i, _ = bot.find(lambda m: kind(m) == "ServerShutdown")
                assert all(kind(x[2]) != "ServerShutdown" for x in bot.msgs[i + 1:])
        finally:
            await close_bots([idle, b])

    run(go())
    rc = gs.wait_exit(8)
    assert rc == 0, (rc, gs.stderr_text()[-2000:])
