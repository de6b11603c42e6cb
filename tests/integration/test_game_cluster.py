"""The game role as a 3-node raft cluster discovered through a real
PostgreSQL (docs/game.md "Cluster"): discovery and one agreed leader,
failover of a game whose owner is killed (-9) with at most a checkpoint of
play lost, players on other nodes kept, and a SIGTERMed leader that hands
its games over exactly and transfers leadership without an election
timeout.

Every test gets a fresh database and fresh nodes; PM_GAME_REPEAT=5 runs
each test five times in a row. Every wait is bounded.
"""

import asyncio
import math
import os
import time

import pytest

pytest.register_assert_rewrite("game_fixtures")

from helpers import free_port  # noqa: E402
from game_fixtures import (  # noqa: E402
    CLUSTER_FLAGS,
    Bot,
    GameServer,
    close_bots,
    ev_data,
    is_game_event,
    kind,
    run,
    start_duel,
    voter_count,
    wait_ready,
)

REPEAT = int(os.environ.get("PM_GAME_REPEAT", "1") or 1)
TICK_MS = 100                 # CLUSTER_FLAGS' game.tick
CHECKPOINT_MS = 500           # game.checkpoint_interval (default)
MAX_ROLLBACK = math.ceil(1000 / TICK_MS) + 2   # ~1 s of ticks + one commit

pytestmark = [pytest.mark.game_cluster, pytest.mark.usefixtures("_rep")]


@pytest.fixture
def _rep(request):
    return getattr(request, "param", 0)


def pytest_generate_tests(metafunc):
    if REPEAT > 1 and "_rep" in metafunc.fixturenames:
        metafunc.parametrize("_rep", range(REPEAT), indirect=True)


# ------------------------------------------------------------ helpers


async def in_thread(fn, *args, **kw):
    """Run a blocking poll (HTTP, sleeps) without stalling the bots."""
    return await asyncio.get_event_loop().run_in_executor(None, lambda: fn(*args, **kw))


async def bot_on(node, token, name):
    b = Bot(name, token)
    await b.connect(node.ws_url)
    return b


def wait_owner(nodes, gid, want=None, not_=None, timeout=5.0):
    """Poll /api/games on nodes until every one lists gid with one owner
    (== want, != not_); that owner."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        owners = set()
        ok = True
        for n in nodes:
            try:
                g = n.game(gid)
            except (OSError, AssertionError) as e:
                g = None
                last = repr(e)
            if g is None:
                ok = False
                break
            owners.add(str(g["owner"]))
        if ok and len(owners) == 1:
            o = owners.pop()
            if (want is None or o == str(want)) and (not_ is None or o != str(not_)):
                return o
            last = o
        time.sleep(0.05)
    raise AssertionError("game %s: owner not as wanted (want %s, not %s) within %.1fs; last %r; "
                         "lists %r" % (gid, want, not_, timeout, last,
                                       {n.name: _safe_games(n) for n in nodes}))


def _safe_games(n):
    try:
        return n.games()
    except Exception as e:  # noqa: BLE001
        return repr(e)


def last_tick(bot, conn=None):
    """The last tick of a GameEvent the bot got (on connection conn)."""
    for t, c, m in reversed(bot.msgs):
        if (conn is None or c == conn) and is_game_event(m, None, bot.game_id):
            return m["GameEvent"]["tick"]
    return None


async def rejoin(bot, url, gid, deadline):
    """Reconnect to url, Authenticate, JoinGame until a Snapshot of gid
    arrives (an Error, e.g. while the failover is under way, is retried).
    Returns the Snapshot's (GameEvent, arrival time)."""
    await bot.reconnect(url)
    bot.model(gid).awaiting = True  # events wait for the Snapshot
    bot.join_errors = []
    since = bot.mark()
    while True:
        await bot.send({"JoinGame": gid})
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("%s: no Snapshot of game %s after JoinGame on %s; errors %r; "
                                 "last %r" % (bot.name, gid, url, bot.join_errors, bot.tail()))
        try:
            i, (t, _, m) = await bot.next_entry(
                lambda m: is_game_event(m, "Snapshot", gid) or kind(m) == "Error",
                min(0.5, remaining), since=since)
        except AssertionError:
            if bot.closed is not None:
                raise
            continue
        if kind(m) == "Error":
            bot.join_errors.append(m)
            since = i + 1
            await asyncio.sleep(0.1)
            continue
        bot.pos = i + 1
        return m["GameEvent"], t


async def moved_after(bot, t0, gid, timeout):
    """Arrival time of the first Moved of gid that arrived after t0."""
    deadline = time.monotonic() + timeout
    while True:
        for t, _, m in bot.msgs:
            if t > t0 and is_game_event(m, "Moved", gid):
                return t
        if time.monotonic() > deadline:
            raise AssertionError("%s: no Moved after the Snapshot within %.1fs; last %r"
                                 % (bot.name, timeout, bot.tail()))
        await asyncio.sleep(0.02)


async def finish(bots, loser, timeout=20.0):
    """loser drives into a wall; every bot sees one GameEnded whose winner
    is the survivor of its model."""
    loser.mode = "crash"
    ends = []
    for b in bots:
        _, (_, _, m) = await b.next_entry(
            lambda m: is_game_event(m, "GameEnded", b.game_id), timeout, since=0)
        ends.append(ev_data(m["GameEvent"]["event"]))
    for b, e in zip(bots, ends):
        st = b.model().state
        alive = [s["id"] for s in st["snakes"] if s["alive"]]
        assert len(alive) <= 1, (b.name, st)
        assert e["winner"] == (alive[0] if alive else None), (b.name, e, st)
        assert sorted(x["snake_id"] for x in e["scores"]) == sorted(s["id"] for s in st["snakes"])
    assert all(e == ends[0] for e in ends), ends
    return ends[0]


def hashes_after(bot, t0):
    """TickHash events of the bot's game that arrived after t0."""
    return [m for t, _, m in bot.msgs if t > t0 and is_game_event(m, "TickHash", bot.game_id)]


# ------------------------------------------------------------ discovery


def test_three_nodes_discover_each_other(game_cluster):
    cl = game_cluster
    t0 = time.monotonic()
    nodes = cl.start(3)
    leader = cl.wait_leader(voters=3, timeout=10)
    elapsed = time.monotonic() - t0
    assert elapsed < 20, elapsed
    hs = cl.healths()
    ids = set()
    for n in nodes:
        st, h = hs[n.name]
        assert st == 200, (n, h)
        assert str(h["leader"]) == str(leader.node_id), hs
        assert voter_count(h["voters"]) == 3, hs
        assert h["raft_state"] == ("leader" if n is leader else "follower"), hs
        assert h["games_owned"] == 0 and h["players"] == 0, h
        ids.add(str(h["node_id"]))
        assert n.ready_status() == 200, n
    assert len(ids) == 3, hs

    cols = {r[0]: r[1] for r in cl.psql(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'servers'")}
    for c in ("id", "ip_address", "grpc_port", "raft_port", "last_heartbeat", "raft_role"):
        assert c in cols, ("servers table columns", cols)
    if "timestamp" in cols["last_heartbeat"]:
        age = "EXTRACT(EPOCH FROM (now() - last_heartbeat))"
    else:  # epoch seconds or milliseconds
        age = ("(CASE WHEN last_heartbeat > 100000000000 THEN EXTRACT(EPOCH FROM now()) * 1000 "
               "- last_heartbeat ELSE (EXTRACT(EPOCH FROM now()) - last_heartbeat) * 1000 END)"
               " / 1000.0")
    rows = cl.psql("SELECT id, ip_address, grpc_port, raft_port, %s, raft_role FROM servers"
                   % age)
    assert len(rows) == 3, rows
    got = sorted((r[1], int(r[2]), int(r[3])) for r in rows)
    want = sorted(("127.0.0.1", n.peer_port, n.raft_port) for n in nodes)
    assert got == want, (got, want)
    for r in rows:
        assert float(r[4]) < 30, ("stale servers row", r)
    assert sorted(r[0] for r in rows) == sorted(ids), ("servers.id is the node id", rows, ids)

    # a token from one node is good on every node; Authenticated names the node
    async def go():
        token, user = nodes[0].guest("roamer")
        for n in nodes:
            b = Bot("roam-" + n.name, token)
            try:
                a = await b.connect(n.ws_url)
                assert a["user_id"] == user["id"], a
                assert str(a["node_id"]) == str(n.node_id), (a, n)
            finally:
                await b.close()

    run(go())


# ------------------------------------------------------------ failover


def _pick(cl):
    nodes = cl.start(3)
    leader = cl.wait_leader(voters=3, timeout=10)
    b = next(n for n in nodes if n is not leader)
    a = leader
    c = next(n for n in nodes if n is not a and n is not b)
    return a, b, c


def test_failover_after_kill_of_the_owner(game_cluster):
    cl = game_cluster
    A, B, C = _pick(cl)

    async def go():
        t1, _ = B.guest("fo_one")
        t2, _ = B.guest("fo_two")
        p1 = await bot_on(B, t1, "p1")
        p2 = await bot_on(B, t2, "p2")
        try:
            gid = await start_duel(B, p1, p2, timeout=10)
            await in_thread(wait_owner, [B, A, C], gid, want=B.node_id)
            p1.mode = p2.mode = "autopilot"
            await p1.sleep_ticks(25, timeout=10)
            for p in (p1, p2):
                p.model().assert_clean(p.name + " before the kill")
                assert p.my_snake()["alive"], p.model().state

            t_kill = time.monotonic()
            B.kill9()
            before = {p.name: last_tick(p) for p in (p1, p2)}
            for p in (p1, p2):
                await p.wait_closed(3)
            deadline = t_kill + 6
            (s1, ts1), (s2, ts2) = await asyncio.gather(
                rejoin(p1, A.ws_url, gid, deadline), rejoin(p2, C.ws_url, gid, deadline))
            resumed = await asyncio.gather(moved_after(p1, ts1, gid, 4),
                                           moved_after(p2, ts2, gid, 4))
            lat = max(resumed) - t_kill
            print("kill -9 of the owner: resumed after %.2fs; last ticks %r, Snapshot ticks %d/%d;"
                  " JoinGame errors %r" % (lat, before, s1["tick"], s2["tick"],
                                           [p1.join_errors, p2.join_errors]))
            assert lat <= 3.0, ("the game resumed %.2fs after kill -9 of its owner" % lat,
                                p1.join_errors, p2.join_errors)
            for p, s in ((p1, s1), (p2, s2)):
                back = before[p.name] - s["tick"]
                assert back <= MAX_ROLLBACK, ("rolled back %d ticks (> %d)" % (back, MAX_ROLLBACK),
                                              before, s["tick"])
                st = ev_data(s["event"])["state"]
                assert st["status"] == "running", st
            new_owner = await in_thread(wait_owner, [A, C], gid, not_=B.node_id)
            assert new_owner in (str(A.node_id), str(C.node_id)), new_owner

            # the stream stays complete and consistent after the resync
            t_res = max(ts1, ts2)
            await p1.sleep_ticks(25, timeout=10)
            for p in (p1, p2):
                p.model().assert_clean(p.name + " after failover")
                assert hashes_after(p, t_res), (p.name, "no TickHash after the resync")
            await finish([p1, p2], p2)
            await in_thread(wait_gone, [A, C], gid)
        finally:
            await close_bots([p1, p2])

    run(go(), timeout=100)


def wait_gone(nodes, gid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(n.game(gid) is None for n in nodes):
            return True
        time.sleep(0.05)
    raise AssertionError("ended game %s still listed: %r" % (gid, {n.name: n.games()
                                                                    for n in nodes}))


def test_failover_keeps_players_of_other_nodes(game_cluster):
    cl = game_cluster
    A, B, C = _pick(cl)

    async def go():
        t1, _ = A.guest("stay_a")
        t2, _ = B.guest("on_b")
        pa = await bot_on(A, t1, "pa")
        pb = await bot_on(B, t2, "pb")
        try:
            gid = await start_duel(B, pb, pa, timeout=10)   # pb queues first: B owns
            await in_thread(wait_owner, [A, B, C], gid, want=B.node_id)
            pa.mode = pb.mode = "autopilot"
            await pa.sleep_ticks(25, timeout=10)
            for p in (pa, pb):
                p.model().assert_clean(p.name + " before the kill")
            conn_a = pa.conn
            snaps_before = len(pa.model().snapshots)

            t_kill = time.monotonic()
            B.kill9()
            before = last_tick(pa)
            await pb.wait_closed(3)
            rj = asyncio.ensure_future(rejoin(pb, C.ws_url, gid, t_kill + 6))
            # pa keeps its socket and gets the new owner's Snapshot through A
            await pa.next_entry(lambda m: is_game_event(m, "Snapshot", gid) and
                                len(pa.model().snapshots) > snaps_before, 5)
            snap = pa.model().snapshots[-1]
            assert snap["conn"] == conn_a and pa.closed is None, "pa lost its socket"
            assert snap["t"] - t_kill <= 3.0, snap["t"] - t_kill
            assert before - snap["tick"] <= MAX_ROLLBACK, (before, snap["tick"])
            t_m = await moved_after(pa, snap["t"], gid, 3)
            print("kill -9 of the owner: pa's Snapshot %.2fs after (tick %d, last seen %d)"
                  % (snap["t"] - t_kill, snap["tick"], before))
            assert t_m - t_kill <= 3.0, t_m - t_kill
            s2, ts2 = await rj
            await moved_after(pb, ts2, gid, 3)
            new_owner = await in_thread(wait_owner, [A, C], gid, not_=B.node_id)
            assert new_owner in (str(A.node_id), str(C.node_id))
            await pa.sleep_ticks(25, timeout=10)
            for p in (pa, pb):
                p.model().assert_clean(p.name + " after failover")
            assert hashes_after(pa, snap["t"]), "no TickHash after the failover"
            await finish([pa, pb], pb)
            assert pa.conn == conn_a and pa.closed is None
        finally:
            await close_bots([pa, pb])

    run(go(), timeout=100)


# ------------------------------------------------------------ SIGTERM


def test_sigterm_of_the_leader_hands_over(game_cluster):
    cl = game_cluster
    # a long election timeout: only a leadership transfer elects a new
    # leader within 1.5 s of the SIGTERM
    nodes = cl.start(3, "--game.election_timeout=2s")
    L = cl.wait_leader(voters=3, timeout=20)
    others = [n for n in nodes if n is not L]

    async def go():
        t1, _ = L.guest("lead_one")
        t2, _ = L.guest("lead_two")
        p1 = await bot_on(L, t1, "p1")
        p2 = await bot_on(L, t2, "p2")
        try:
            gid = await start_duel(L, p1, p2, timeout=10)
            await in_thread(wait_owner, nodes, gid, want=L.node_id)
            p1.mode = p2.mode = "autopilot"
            await p1.sleep_ticks(15, timeout=10)
            conns = {p.name: p.conn for p in (p1, p2)}

            loop = asyncio.get_event_loop()
            t0 = time.monotonic()
            L.sigterm()

            def leader_watch():
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline:
                    ld = cl.agreed_leader(others)
                    if ld is not None:
                        return ld, time.monotonic()
                    time.sleep(0.02)
                return None, None
            watch = loop.run_in_executor(None, leader_watch)

            lasts = {}
            for p in (p1, p2):
                m = await p.next(lambda m: kind(m) == "ServerShutdown", 5)
                d = m["ServerShutdown"]
                assert isinstance(d.get("reason"), str), m
                assert isinstance(d.get("grace_period_seconds"), (int, float)), m
                code, _ = await p.wait_closed(12)
                assert code == 1001, (p.name, code)
                lasts[p.name] = last_tick(p, conns[p.name])
            (s1, ts1), (s2, ts2) = await asyncio.gather(
                rejoin(p1, others[0].ws_url, gid, time.monotonic() + 6),
                rejoin(p2, others[1].ws_url, gid, time.monotonic() + 6))
            for p, s in ((p1, s1), (p2, s2)):
                assert s["tick"] >= lasts[p.name] - 1, (
                    "the hand-off lost play: Snapshot tick %d, last tick seen %d"
                    % (s["tick"], lasts[p.name]))
            await asyncio.gather(moved_after(p1, ts1, gid, 3), moved_after(p2, ts2, gid, 3))

            new_leader, t_lead = await watch
            print("SIGTERM of the leader: new leader after %s s; last ticks %r, Snapshot ticks "
                  "%d/%d; JoinGame errors %r"
                  % (t_lead and round(t_lead - t0, 3), lasts, s1["tick"], s2["tick"],
                     [p1.join_errors, p2.join_errors]))
            assert new_leader is not None, ("no agreed leader among the survivors",
                                            cl.healths(others))
            assert new_leader is not L
            assert t_lead - t0 < 1.5, ("new leader %.2fs after SIGTERM: no raft_transfer?"
                                       % (t_lead - t0))
            owner = await in_thread(wait_owner, others, gid, not_=L.node_id)
            assert owner in [str(n.node_id) for n in others]

            rc = await loop.run_in_executor(None, L.wait_exit, 12)
            assert rc == 0, ("old leader exit code", rc, L.stderr_text()[-2000:])
            def two_voters():
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    hs = cl.healths(others)
                    if all(st == 200 and voter_count(h["voters"]) == 2 for st, h in hs.values()):
                        return None
                    time.sleep(0.05)
                return hs
            hs = await in_thread(two_voters)
            assert hs is None, ("the leaver is still a voter", hs)
            await p1.sleep_ticks(15, timeout=10)
            for p in (p1, p2):
                p.model().assert_clean(p.name + " after the hand-off")
            await finish([p1, p2], p2)
        finally:
            await close_bots([p1, p2])

    run(go(), timeout=100)
    rows = cl.psql("SELECT id FROM servers")
    assert str(L.node_id) not in [r[0] for r in rows], ("the leaver's servers row", rows)


def test_static_peers_form_a_cluster_without_a_database(server_factory, tmp_path):
    """game.peers and no database: the first of the list bootstraps once
    nobody answers, the others join it: one leader, three voters."""
    peers = [free_port() for _ in range(3)]
    plist = ",".join("127.0.0.1:%d" % p for p in peers)
    nodes = []
    for i, peer in enumerate(peers):
        data = tmp_path / ("static%d" % i)
        data.mkdir()
        flags = [f for f in CLUSTER_FLAGS if not f.startswith("--game.cluster")]
        srv = server_factory(*flags, "--game.peers=" + plist,
                             "--game.peer_port=%d" % peer,
                             "--game.raft_port=%d" % free_port(),
                             "--game.data_dir=%s" % data, role="game")
        nodes.append(GameServer(srv, data, name="static%d" % i))
    for n in nodes:
        wait_ready(n, timeout=20)
        st, js = n.health()
        n.node_id = js["node_id"]
        assert js["raft_state"] in ("leader", "follower"), js
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        hs = [n.health()[1] for n in nodes]
        if (len({h["leader"] for h in hs}) == 1 and
                all(voter_count(h["voters"]) == 3 for h in hs)):
            break
        time.sleep(0.1)
    assert len({h["leader"] for h in hs}) == 1, hs
    assert all(voter_count(h["voters"]) == 3 for h in hs), hs
    assert sum(h["raft_state"] == "leader" for h in hs) == 1, hs
    # The first of the list started the cluster; the others did not.
    assert "cluster_bootstrap" in nodes[0].stdout_text()
    assert not any("cluster_bootstrap" in n.stdout_text() for n in nodes[1:])
