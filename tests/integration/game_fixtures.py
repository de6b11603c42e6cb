"""Shared fixtures and helpers for the game role tests (test_game*.py).

The contract is docs/game.md. Loaded as a pytest plugin (conftest's
pytest_plugins), so its fixtures exist once per session:

- ``game_factory`` / ``game``: one ``p2pmesh --role=game`` node without a
  database or peers (conftest's Server: free port on 127.0.0.1, JSON log
  check at teardown), with short start delays and ticks so that games run
  quickly. ``GameServer`` wraps it: health(), ready(), games(), guest().
- ``game_cluster``: ``start(n)`` runs n nodes sharing one fresh database of
  a real PostgreSQL (pg.py's ``pg_server``, one per module, a new database
  per test), each with its own raft and peer-link ports and data dir, one
  after the other, and hands them out once every ``/ready`` is 200.
- ``Bot``: a python-websockets (10.x asyncio client API) player of the
  WebSocket protocol. A background reader keeps every message, applies
  each GameEvent to a model of the game exactly as docs/game.md says,
  checks stream_seq continuity and every TickHash against its own FNV-1a,
  and (optionally) steers its snake: ``autopilot`` avoids walls and bodies
  greedily, ``crash`` drives straight into the nearest wall.

Every wait is bounded.
"""

import asyncio
import base64
import copy
import json
import os
import signal
import struct
import subprocess
import time

import pytest
import websockets

import helpers
from helpers import free_port, http_get

GAME_SECRET = "game-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"  # 55 bytes
PROTOCOL = 1

DIRS = {"Up": (0, -1), "Down": (0, 1), "Left": (-1, 0), "Right": (1, 0)}
OPPOSITE = {"Up": "Down", "Down": "Up", "Left": "Right", "Right": "Left"}
PERP = {"Up": ("Left", "Right"), "Down": ("Left", "Right"),
        "Left": ("Up", "Down"), "Right": ("Up", "Down")}

# Flags every single-node game server of these tests gets (later flags win).
SINGLE_FLAGS = (
    "--log.level=info",
    "--game.start_delay=200ms",
    "--game.tick=50ms",
    "--game.ffa_wait=500ms",
    "--shutdown.grace=5s",
)

# Flags of every cluster node (later flags win).
CLUSTER_FLAGS = (
    "--log.level=info",
    "--jwt.secret=" + GAME_SECRET,
    "--game.cluster=on",
    "--game.advertise_addr=127.0.0.1",
    "--game.election_timeout=300ms",
    "--game.start_delay=300ms",
    "--game.tick=100ms",
    "--shutdown.grace=10s",
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "game_cluster: a 3-node game cluster on a real PostgreSQL "
        "(PM_GAME_REPEAT=N runs each such test N times)")


def run(coro, timeout=60):
    """Run one test coroutine with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def now_ms():
    return int(time.time() * 1000)


# ------------------------------------------------------------ the model


def fnv1a_words(words):
    """32-bit FNV-1a over u32 words, each as 4 little-endian bytes."""
    h = 2166136261
    for w in words:
        for b in struct.pack("<I", w & 0xFFFFFFFF):
            h ^= b
            h = (h * 16777619) & 0xFFFFFFFF
    return h


def state_hash(state):
    """The TickHash of a Snapshot-shaped state (docs/game.md), 8 hex digits."""
    words = [int(state["tick"]) & 0xFFFFFFFF]
    for s in sorted((s for s in state["snakes"] if s["alive"]), key=lambda s: s["id"]):
        words += [s["id"], len(s["body"])]
        for x, y in s["body"]:
            words += [x, y]
    words.append(len(state["food"]))
    for x, y in state["food"]:
        words += [x, y]
    return "%08x" % fnv1a_words(words)


def _self_test_hash():
    # the published FNV-1a vectors, and the worked example of tests/e2e/game_model.mjs
    def fnv_bytes(data):
        h = 2166136261
        for b in data:
            h = ((h ^ b) * 16777619) & 0xFFFFFFFF
        return "%08x" % h
    assert fnv_bytes(b"") == "811c9dc5" and fnv_bytes(b"a") == "e40c292c"
    assert fnv_bytes(b"foobar") == "bf9cf968"
    st = {"tick": 7, "food": [[5, 6], [0, 2]], "snakes": [
        {"id": 2, "alive": True, "body": [[10, 3], [10, 4]]},
        {"id": 1, "alive": False, "body": [[9, 9], [9, 10]]},
        {"id": 0, "alive": True, "body": [[1, 1], [2, 1], [3, 1]]}]}
    assert state_hash(st) == "006ca9c4", state_hash(st)
    assert state_hash({"tick": 0, "snakes": [], "food": []}) == "9be17165"


_self_test_hash()


def ev_kind(event):
    """'Moved' for "Moved", 'SnakeTurned' for {"SnakeTurned": {...}}."""
    if isinstance(event, str):
        return event
    if isinstance(event, dict) and len(event) == 1:
        return next(iter(event))
    return None


def ev_data(event):
    if isinstance(event, dict) and len(event) == 1:
        return next(iter(event.values()))
    return None


def kind(msg):
    """The tag of a server message (bare string or one-key object)."""
    return ev_kind(msg)


def is_game_event(msg, kinds=None, game_id=None):
    if not (isinstance(msg, dict) and "GameEvent" in msg):
        return False
    ge = msg["GameEvent"]
    if game_id is not None and ge.get("game_id") != game_id:
        return False
    if kinds is not None:
        k = ev_kind(ge.get("event"))
        if isinstance(kinds, str):
            return k == kinds
        return k in kinds
    return True


def snake_by_id(state, sid):
    for s in state["snakes"]:
        if s["id"] == sid:
            return s
    return None


def comparable(state):
    """What two views of one game state must agree on: the hash covers
    live snakes and food; also directions, scores, growth, status, tick.
    Dead snakes: only id, alive and score (their body left the board)."""
    snakes = []
    for s in sorted(state["snakes"], key=lambda s: s["id"]):
        if s["alive"]:
            snakes.append((s["id"], s["user_id"], True, [tuple(c) for c in s["body"]],
                           s["direction"], s["score"], s["grow"]))
        else:
            snakes.append((s["id"], s["user_id"], False, s["score"]))
    return {"tick": state["tick"], "status": state["status"], "snakes": snakes,
            "food": [tuple(c) for c in state["food"]], "width": state["width"],
            "height": state["height"]}


class GameModel:
    """One game as a client sees it: the last Snapshot plus every event
    since, applied as docs/game.md says."""

    def __init__(self, game_id):
        self.game_id = game_id
        self.state = None
        self.seq = None
        self.awaiting = False   # gap or hash mismatch: events wait for a Snapshot
        self.result = None      # GameEnded data
        self.events = []        # (stream_seq, tick, event) of applied broadcast events
        self.snapshots = []     # dicts: seq, tick, state, prev_state, prev_seq, t, conn
        self.hash_ok = 0
        self.hash_bad = []      # (tick, server hash, our hash)
        self.gaps = []          # (our seq, received seq)
        self.dups = []          # events at or below our seq
        self.errors = []        # events that do not fit the model
        self.moved_ticks = []   # (tick, monotonic time) of each Moved

    def apply(self, ge, t, conn):
        """Apply one GameEvent; returns 'resync' when the client must ask for one."""
        seq = ge.get("stream_seq")
        tick = ge.get("tick")
        event = ge.get("event")
        k = ev_kind(event)
        d = ev_data(event)
        if k == "Snapshot":
            st = d.get("state") if isinstance(d, dict) else None
            if not isinstance(st, dict):
                self.errors.append("Snapshot without a state: %r" % (ge,))
                return None
            self.snapshots.append({"seq": seq, "tick": tick, "state": copy.deepcopy(st),
                                   "prev_state": copy.deepcopy(self.state),
                                   "prev_seq": self.seq, "t": t, "conn": conn})
            self.state = copy.deepcopy(st)
            self.seq = seq
            self.awaiting = False
            if st.get("status") == "ended" and self.result is None:
                pass
            return None
        if self.state is None:
            self.errors.append("event before any Snapshot: %r" % (ge,))
            return None
        if self.awaiting:
            return None
        if not isinstance(seq, int) or seq <= self.seq:
            self.dups.append((self.seq, ge))
            return None
        if seq != self.seq + 1:
            self.gaps.append((self.seq, seq))
            self.awaiting = True
            return "resync"
        self.seq = seq
        self.events.append((seq, tick, copy.deepcopy(event)))
        st = self.state
        if isinstance(tick, int):
            if tick < st["tick"]:
                self.errors.append("tick went back: %r after %r" % (tick, st["tick"]))
            st["tick"] = tick
        try:
            if k == "SnakeTurned":
                s = snake_by_id(st, d["snake_id"])
                if d["direction"] not in DIRS:
                    self.errors.append("bad direction %r" % (d,))
                s["direction"] = d["direction"]
            elif k == "Moved":
                self.moved_ticks.append((tick, t))
                for s in st["snakes"]:
                    if not s["alive"]:
                        continue
                    dx, dy = DIRS[s["direction"]]
                    hx, hy = s["body"][0]
                    s["body"].insert(0, [hx + dx, hy + dy])
                    if s["grow"] > 0:
                        s["grow"] -= 1
                    else:
                        s["body"].pop()
            elif k == "SnakeDied":
                s = snake_by_id(st, d["snake_id"])
                if not s["alive"]:
                    self.errors.append("SnakeDied for a dead snake: %r" % (d,))
                s["alive"] = False
            elif k == "FoodEaten":
                pos = list(d["position"])
                if pos in st["food"]:
                    st["food"].remove(pos)
                else:
                    self.errors.append("FoodEaten of food not on the board: %r (food %r)"
                                       % (d, st["food"]))
                s = snake_by_id(st, d["snake_id"])
                s["score"] += 1
                s["grow"] += 1
                if list(s["body"][0]) != pos:
                    self.errors.append("FoodEaten at %r but the head is at %r"
                                       % (pos, s["body"][0]))
            elif k == "FoodSpawned":
                st["food"].append(list(d["position"]))
            elif k == "StatusUpdated":
                st["status"] = d["status"]
            elif k == "GameEnded":
                self.result = d
            elif k == "TickHash":
                mine = state_hash(st)
                if d["hash"] == mine:
                    self.hash_ok += 1
                else:
                    self.hash_bad.append((tick, d["hash"], mine))
                    self.awaiting = True
                    return "resync"
            else:
                self.errors.append("unknown event %r" % (ge,))
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
            self.errors.append("event %r does not fit the model: %r" % (ge, e))
        return None

    def problems(self):
        """Everything that shows an incomplete or inconsistent stream."""
        return {"gaps": self.gaps, "dups": [d[1] for d in self.dups][:5],
                "hash_bad": self.hash_bad, "errors": self.errors[:5]}

    def assert_clean(self, who=""):
        p = self.problems()
        assert not any(p.values()), "%s game %s: %r" % (who, self.game_id, p)


# ------------------------------------------------------------ steering


def _free_run(state, blocked, start, d, limit=100):
    dx, dy = DIRS[d]
    x, y = start
    n = 0
    while n < limit:
        x, y = x + dx, y + dy
        if not (0 <= x < state["width"] and 0 <= y < state["height"]):
            return n, True
        if (x, y) in blocked:
            return n, False
        n += 1
    return n, False


def _flood(state, blocked, start, limit):
    seen = {start}
    todo = [start]
    while todo and len(seen) < limit:
        x, y = todo.pop()
        for dx, dy in DIRS.values():
            c = (x + dx, y + dy)
            if c in seen or c in blocked:
                continue
            if not (0 <= c[0] < state["width"] and 0 <= c[1] < state["height"]):
                continue
            seen.add(c)
            todo.append(c)
    return len(seen)


def choose_direction(state, me, current, mode="autopilot"):
    """The direction my snake should take next (None: keep it).

    autopilot: a safe cell with room behind it, keeping a long free run
    ahead so that a few ticks without control (a reconnect) are survivable.
    crash: the shortest clear straight line to a wall."""
    head = tuple(me["body"][0])
    blocked = set()
    other_heads = []
    for s in state["snakes"]:
        if not s["alive"]:
            continue
        for c in s["body"]:
            blocked.add(tuple(c))
        if s["id"] != me["id"]:
            other_heads.append(tuple(s["body"][0]))
    cands = [current] + list(PERP[current])
    if mode == "crash":
        if _free_run(state, blocked, head, current)[1]:
            return current
        best = None
        for d in cands:
            run_len, to_wall = _free_run(state, blocked, head, d)
            if to_wall and (best is None or run_len < best[0]):
                best = (run_len, d)
        if best is not None:
            return best[1]
    w, h = state["width"], state["height"]
    want_run = max(3, min(w, h) // 3)
    need = sum(len(s["body"]) for s in state["snakes"] if s["alive"]) + 8
    scored = []
    for i, d in enumerate(cands):
        dx, dy = DIRS[d]
        nxt = (head[0] + dx, head[1] + dy)
        if not (0 <= nxt[0] < w and 0 <= nxt[1] < h) or nxt in blocked:
            continue
        room = _flood(state, blocked | {head}, nxt, need)
        run_len, _ = _free_run(state, blocked, head, d)
        danger = any(abs(nxt[0] - ox) + abs(nxt[1] - oy) <= 1 for ox, oy in other_heads)
        scored.append((room >= need, not danger, min(run_len, want_run), room, i == 0, d))
    if not scored:
        return current
    scored.sort(reverse=True)
    return scored[0][-1]


# ------------------------------------------------------------ HTTP


def api(port, method, path, body=None, raw=None, timeout=10):
    """One request; returns (status, headers, parsed JSON or None, raw body)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = {"Connection": "close"}
        data = None
        if raw is not None:
            data = raw if isinstance(raw, bytes) else raw.encode()
        elif body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        out = resp.read()
        try:
            js = json.loads(out.decode()) if out else None
        except ValueError:
            js = None
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, js, out
    finally:
        conn.close()


def guest(port, nickname=None):
    """POST /api/auth/guest; (token, user). Asserts 200."""
    body = {"nickname": nickname} if nickname is not None else None
    st, _, js, out = api(port, "POST", "/api/auth/guest", body=body)
    assert st == 200, ("guest", nickname, st, out[:300])
    return js["token"], js["user"]


def jwt_claims(token):
    part = token.split(".")[1]
    part += "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(part))


def get_json(port, path, timeout=3):
    r = http_get(port, path, timeout=timeout)
    try:
        return r.status, json.loads(r.body.decode())
    except ValueError:
        return r.status, None


# ------------------------------------------------------------ servers


class GameServer:
    """A game-role process (conftest's Server underneath)."""

    def __init__(self, srv, data_dir, raft_port=None, peer_port=None, name=""):
        self.srv = srv
        self.data_dir = data_dir
        self.raft_port = raft_port
        self.peer_port = peer_port
        self.name = name
        self.node_id = None

    @property
    def port(self):
        return self.srv.port

    @property
    def proc(self):
        return self.srv.proc

    @property
    def ws_url(self):
        return "ws://127.0.0.1:%d/ws" % self.srv.port

    def alive(self):
        return self.srv.proc.poll() is None

    def health(self, timeout=3):
        return get_json(self.port, "/health", timeout)

    def ready_status(self, timeout=3):
        return http_get(self.port, "/ready", timeout=timeout).status

    def games(self):
        st, js = get_json(self.port, "/api/games")
        assert st == 200, ("GET /api/games", st, js)
        assert isinstance(js, dict) and isinstance(js.get("games"), list), js
        return js["games"]

    def game(self, gid):
        for g in self.games():
            if g.get("id") == gid:
                return g
        return None

    def guest(self, nickname=None):
        return guest(self.port, nickname)

    def logs(self):
        return self.srv.logs()

    def stdout_text(self):
        return self.srv.stdout_text()

    def stderr_text(self):
        return self.srv.stderr_text()

    def kill9(self):
        self.srv.proc.kill()
        self.srv.proc.wait(10)

    def sigterm(self):
        self.srv.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout):
        try:
            return self.srv.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def __repr__(self):
        return "GameServer(%s port=%d node=%s)" % (self.name, self.port, self.node_id)


def wait_ready(gs, timeout=20.0):
    """GET /ready must answer 200."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not gs.alive():
            raise RuntimeError("p2pmesh --role=game exited with %s\nstderr: %s\nstdout: %s"
                               % (gs.proc.returncode, gs.stderr_text()[-3000:],
                                  gs.stdout_text()[-3000:]))
        try:
            r = http_get(gs.port, "/ready", timeout=2)
            last = r
            if r.status == 200:
                return
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError("%r: GET /ready not 200 within %.0fs (last: %r)\nstdout: %s"
                       % (gs, timeout, last, gs.stdout_text()[-3000:]))


@pytest.fixture
def game_factory(server_factory, tmp_path):
    """start(*flags, env=None) -> GameServer: one node, no database, no peers."""
    count = [0]

    def start(*flags, env=None):
        count[0] += 1
        data = tmp_path / ("gdata%d" % count[0])
        data.mkdir()
        all_flags = list(SINGLE_FLAGS) + ["--game.data_dir=%s" % data] + list(flags)
        srv = server_factory(*all_flags, env=env, role="game")
        gs = GameServer(srv, data, name="single%d" % count[0])
        wait_ready(gs)
        st, js = gs.health()
        if isinstance(js, dict):
            gs.node_id = js.get("node_id")
        return gs

    return start


@pytest.fixture
def game(game_factory):
    return game_factory()


class GameCluster:
    """Nodes of one cluster on one fresh PostgreSQL database."""

    def __init__(self, server_factory, tmp_path, pg, dbname):
        self.server_factory = server_factory
        self.tmp_path = tmp_path
        self.pg = pg
        self.dbname = dbname
        self.db_url = "postgres://postgres@127.0.0.1:%d/%s" % (pg.port, dbname)
        self.nodes = []

    def psql(self, sql):
        """Rows of sql as lists of strings."""
        out = self.pg.psql(sql, dbname=self.dbname)
        return [line.split("|") for line in out.splitlines() if line]

    def start_node(self, *flags, ready=True):
        i = len(self.nodes)
        data = self.tmp_path / ("node%d" % i)
        data.mkdir()
        raft, peer = free_port(), free_port()
        all_flags = list(CLUSTER_FLAGS) + [
            "--database.url=" + self.db_url,
            "--game.raft_port=%d" % raft,
            "--game.peer_port=%d" % peer,
            "--game.data_dir=%s" % data,
        ] + list(flags)
        srv = self.server_factory(*all_flags, role="game")
        gs = GameServer(srv, data, raft, peer, name="node%d" % i)
        self.nodes.append(gs)
        if ready:
            wait_ready(gs)
            st, js = gs.health()
            gs.node_id = js.get("node_id") if isinstance(js, dict) else None
        return gs

    def start(self, n=3, *flags):
        """n nodes, one after the other, each ready before the next starts."""
        for _ in range(n):
            self.start_node(*flags)
        return self.nodes

    def live(self):
        return [n for n in self.nodes if n.alive()]

    def healths(self, nodes=None):
        out = {}
        for n in nodes or self.live():
            try:
                st, js = n.health(timeout=2)
            except OSError as e:
                st, js = None, repr(e)
            out[n.name] = (st, js)
        return out

    def agreed_leader(self, nodes=None, voters=None):
        """The node every one of nodes names as leader (and that says it
        leads), or None."""
        nodes = nodes or self.live()
        hs = self.healths(nodes)
        leaders = set()
        leading = []
        for n in nodes:
            st, js = hs[n.name]
            if st != 200 or not isinstance(js, dict):
                return None
            leaders.add(str(js.get("leader")))
            if js.get("raft_state") == "leader":
                leading.append(n)
            if voters is not None and voter_count(js.get("voters")) != voters:
                return None
        if len(leaders) != 1 or len(leading) != 1:
            return None
        if str(leading[0].node_id) not in leaders:
            return None
        return leading[0]

    def wait_leader(self, nodes=None, voters=None, timeout=10.0, interval=0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ld = self.agreed_leader(nodes, voters)
            if ld is not None:
                return ld
            time.sleep(interval)
        raise AssertionError("no agreed leader within %.1fs: %r"
                             % (timeout, self.healths(nodes)))

    def by_node_id(self, node_id):
        for n in self.nodes:
            if str(n.node_id) == str(node_id):
                return n
        return None

    def stop_all(self):
        live = [n for n in self.nodes if n.alive()]
        for n in live:
            try:
                n.sigterm()
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 4
        for n in live:
            n.wait_exit(max(0.1, deadline - time.monotonic()))
        for n in self.nodes:
            if n.alive():
                n.srv.proc.kill()
            n.srv.stop()


def voter_count(v):
    if isinstance(v, list):
        return len(v)
    return v


@pytest.fixture
def game_cluster(pg_server, server_factory, tmp_path, request):
    """A GameCluster on a fresh database of the module's PostgreSQL;
    call .start(3) to run the nodes. All stopped at teardown."""
    name = "game_%d_%d" % (os.getpid(), int(time.time() * 1000) % 10**9)
    pg_server.psql("CREATE DATABASE %s" % name, dbname="postgres")
    cl = GameCluster(server_factory, tmp_path, pg_server, name)
    yield cl
    cl.stop_all()
    try:
        pg_server.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name, dbname="postgres")
    except Exception:
        pass


# ------------------------------------------------------------ the bot


class Bot:
    """One player (or spectator) over /ws.

    msgs: every message received, as (monotonic time, connection number,
    decoded JSON). A background reader applies GameEvents to
    self.models[game_id] and, when self.mode is 'autopilot' or 'crash',
    turns its own snake after every Moved. next() waits for a message after
    the read position; find() searches without moving it."""

    def __init__(self, name, token=None):
        self.name = name
        self.token = token
        self.user_id = None
        self.node_id = None
        self.ws = None
        self.conn = 0
        self.msgs = []
        self.pos = 0
        self.models = {}
        self.game_id = None
        self.mode = None        # None, "autopilot" or "crash"
        self.cmd_seq = 0
        self.sent_turns = []    # (game_id, seq, direction, model tick)
        self.pending = None     # (direction, tick) of a turn not yet seen applied
        self.resyncs = 0
        self.closed = None      # (code, reason) when the server closed
        self.closed_at = None
        self._reader = None
        self._waiters = []
        self.reader_error = None

    # --------------------------------------------------------- connection
    async def connect(self, url, authenticate=True, version=PROTOCOL):
        self.ws = await helpers.ws_connect(url, max_size=None)
        self.conn += 1
        self.closed = None
        self.closed_at = None
        self._reader = asyncio.ensure_future(self._read_loop(self.ws, self.conn))
        if authenticate:
            return await self.authenticate(version=version)
        return None

    async def authenticate(self, token=None, version=PROTOCOL, timeout=5.0):
        await self.send({"Authenticate": {"token": token or self.token,
                                          "protocol_version": version}})
        m = await self.next(lambda m: kind(m) in ("Authenticated", "AccessDenied"), timeout)
        assert kind(m) == "Authenticated", "%s: %r" % (self.name, m)
        a = m["Authenticated"]
        self.user_id = a.get("user_id")
        self.node_id = a.get("node_id")
        return a

    async def reconnect(self, url, timeout=5.0):
        """Close the old socket (if open), connect to url, Authenticate."""
        await self.close()
        return await self.connect(url)

    async def close(self):
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:
                pass
        if self._reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 3)
            except Exception:
                self._reader.cancel()

    async def send(self, obj):
        """Send obj as JSON (a bare string becomes a JSON string: "LeaveQueue")."""
        await self.ws.send(json.dumps(obj))

    async def send_raw(self, data):
        """Send text (or bytes) exactly as given."""
        await self.ws.send(data)

    def _notify(self):
        for f in self._waiters:
            if not f.done():
                f.set_result(None)
        self._waiters = []

    async def _read_loop(self, ws, conn):
        try:
            while True:
                try:
                    raw = await ws.recv()
                except websockets.ConnectionClosed:
                    if conn == self.conn:
                        self.closed = (ws.close_code, ws.close_reason)
                        self.closed_at = time.monotonic()
                    return
                t = time.monotonic()
                if isinstance(raw, bytes):
                    obj = {"__binary__": raw}
                else:
                    try:
                        obj = json.loads(raw)
                    except ValueError:
                        obj = {"__text__": raw}
                self.msgs.append((t, conn, obj))
                if isinstance(obj, dict) and "GameEvent" in obj:
                    await self._game_event(obj["GameEvent"], t, conn)
                self._notify()
        except Exception as e:  # noqa: BLE001 - surfaced by next()/asserts
            self.reader_error = e
            raise
        finally:
            self._notify()

    async def _game_event(self, ge, t, conn):
        gid = ge.get("game_id")
        m = self.models.get(gid)
        if m is None:
            m = self.models[gid] = GameModel(gid)
        k = ev_kind(ge.get("event"))
        if k == "SnakeTurned" and m.state is not None and not m.awaiting:
            d = ev_data(ge["event"])
            me = self.my_snake(gid)
            if me is not None and d.get("snake_id") == me["id"]:
                self.pending = None
        if m.apply(ge, t, conn) == "resync":
            self.resyncs += 1
            await self.send({"RequestResync": {"game_id": gid}})
            return
        if k == "Snapshot":
            self.pending = None
        if k == "Moved" and self.mode and gid == self.game_id and not m.awaiting:
            await self._steer(m)

    async def _steer(self, m):
        st = m.state
        if st.get("status") != "running":
            return
        me = self.my_snake(m.game_id)
        if me is None or not me["alive"]:
            return
        if self.pending is not None and st["tick"] <= self.pending[1] + 2:
            return
        self.pending = None
        d = choose_direction(st, me, me["direction"], self.mode)
        if d and d != me["direction"] and d != OPPOSITE[me["direction"]]:
            self.pending = (d, st["tick"])
            await self.turn(d, m.game_id)

    # --------------------------------------------------------- game helpers
    def my_snake(self, gid=None):
        m = self.models.get(self.game_id if gid is None else gid)
        if m is None or m.state is None:
            return None
        for s in m.state["snakes"]:
            if s["user_id"] == self.user_id:
                return s
        return None

    def model(self, gid=None):
        return self.models.get(self.game_id if gid is None else gid)

    async def turn(self, direction, gid=None, seq=None):
        gid = self.game_id if gid is None else gid
        if seq is None:
            self.cmd_seq += 1
            seq = self.cmd_seq
        else:
            self.cmd_seq = max(self.cmd_seq, seq)
        m = self.models.get(gid)
        self.sent_turns.append((gid, seq, direction, m.state["tick"] if m and m.state else None))
        await self.send({"GameCommand": {"command_id": {"game_id": gid, "seq": seq},
                                         "command": {"Turn": {"direction": direction}}}})

    async def queue(self, mode):
        await self.send({"QueueForMatch": {"mode": mode}})

    async def matched(self, timeout=5.0):
        """Wait for MatchFound; remember its game id."""
        m = await self.next(lambda m: kind(m) == "MatchFound", timeout)
        self.game_id = m["MatchFound"]["game_id"]
        return self.game_id

    # --------------------------------------------------------- waiting
    def mark(self):
        return len(self.msgs)

    def find(self, pred, since=0):
        for i in range(since, len(self.msgs)):
            if pred(self.msgs[i][2]):
                return i, self.msgs[i]
        return None, None

    def find_all(self, pred, since=0):
        return [e for e in self.msgs[since:] if pred(e[2])]

    async def _wait_new(self, remaining):
        f = asyncio.get_event_loop().create_future()
        self._waiters.append(f)
        try:
            await asyncio.wait_for(f, remaining)
        except asyncio.TimeoutError:
            pass

    async def next_entry(self, pred, timeout=5.0, since=None):
        """(index, (t, conn, msg)) of the first message from the read
        position (or since) matching pred; moves the read position past it
        unless since is given."""
        deadline = time.monotonic() + timeout
        i = self.pos if since is None else since
        while True:
            while i < len(self.msgs):
                if pred(self.msgs[i][2]):
                    if since is None:
                        self.pos = i + 1
                    return i, self.msgs[i]
                i += 1
            if self.reader_error is not None:
                raise AssertionError("%s: reader failed: %r" % (self.name, self.reader_error))
            if self._reader is None or self._reader.done():
                raise AssertionError("%s: connection closed %r while waiting; last messages %r"
                                     % (self.name, self.closed, self.tail()))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("%s: no matching message within %.1fs; last messages %r"
                                     % (self.name, timeout, self.tail()))
            await self._wait_new(remaining)

    async def next(self, pred, timeout=5.0, since=None):
        return (await self.next_entry(pred, timeout, since))[1][2]

    async def next_event(self, kinds, timeout=5.0, gid=None, since=None):
        """The next GameEvent (of gid, default the bot's game) of kinds."""
        g = self.game_id if gid is None else gid
        m = await self.next(lambda m: is_game_event(m, kinds, g), timeout, since)
        return m["GameEvent"]

    async def wait_closed(self, timeout=5.0):
        """Wait until the server closes the socket; (code, reason)."""
        deadline = time.monotonic() + timeout
        while self.closed is None:
            if self._reader is None or self._reader.done():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("%s: not closed within %.1fs; last %r"
                                     % (self.name, timeout, self.tail()))
            await self._wait_new(remaining)
        return self.closed

    async def sleep_ticks(self, n, timeout=10.0, gid=None):
        """Wait until n more Moved events of the game have arrived."""
        g = self.game_id if gid is None else gid
        for _ in range(n):
            await self.next_event("Moved", timeout, g)

    async def ping_roundtrip(self, timeout=5.0):
        """A Ping answered proves every earlier message was handled."""
        ct = now_ms() * 1000 + len(self.msgs)
        await self.send({"Ping": {"client_time": ct}})
        m = await self.next(lambda m: kind(m) == "Pong" and m["Pong"].get("client_time") == ct,
                            timeout)
        return m["Pong"]

    def tail(self, n=8):
        out = []
        for _, conn, m in self.msgs[-n:]:
            s = json.dumps(m, default=repr)
            out.append(s if len(s) < 300 else s[:300] + "...")
        return out

    def game_events(self, gid=None, since=0):
        g = self.game_id if gid is None else gid
        return [(t, c, m["GameEvent"]) for t, c, m in self.msgs[since:]
                if is_game_event(m, None, g)]


async def new_bot(server, name, nickname=None, url=None):
    """A guest of server, connected and authenticated (to url, default server's)."""
    token, user = server.guest(nickname)
    b = Bot(name, token)
    b.guest_user = user
    await b.connect(url or server.ws_url)
    return b


async def close_bots(bots):
    for b in bots:
        if b is not None:
            await b.close()


async def start_duel(server_a, bot_a, bot_b, server_b=None, timeout=8.0):
    """bot_a queues duel first, then bot_b; both matched into one game.
    Returns the game id; both bots have its Snapshot."""
    await bot_a.queue("duel")
    await bot_a.next(lambda m: kind(m) == "QueueUpdate", timeout)
    await bot_b.queue("duel")
    ga = await bot_a.matched(timeout)
    gb = await bot_b.matched(timeout)
    assert ga == gb, (ga, gb)
    await bot_a.next_event("Snapshot", timeout)
    await bot_b.next_event("Snapshot", timeout)
    return ga
