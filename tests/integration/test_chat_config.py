"""Chat role configuration: FaltuBaat's environment names (reference/chat.md
section 9) set the chat keys, with their units (ms values, a DB_PATH that
is a path), and env=production refuses an unsafe jwt.secret."""

import json
import re

import jwt

from chat_fixtures import SECRET, api, wait_ready
from helpers import duration_ms, run_cli


LINE_RE = re.compile(r"^(\S+) = (.*?)  # (default|file|env|flag)$")


def chat_config(env):
    r = run_cli("--role=chat", "--print-config", env=env)
    assert r.returncode == 0, (r.returncode, r.stderr)
    conf = {}
    for line in r.stdout.splitlines():
        m = LINE_RE.match(line)
        if m:
            conf[m.group(1)] = (m.group(2), m.group(3))
    return conf


def test_faltubaat_environment_names_set_the_chat_keys():
    conf = chat_config({
        "PORT": "3456", "NODE_ENV": "test", "JWT_EXPIRES_IN": "7d",
        "STREAM_COOLDOWN_MS": "2500", "MAX_STREAM_DURATION_MS": "90000",
        "RATE_LIMIT_WINDOW_MS": "60000", "RATE_LIMIT_MAX_REQUESTS": "3",
        "MAX_CONCURRENT_STREAMS": "7", "HLS_SERVER": "https://cdn.example/hls",
        "S3_SYNC_INTERVAL": "120", "S3_DB_BUCKET": "b", "S3_DB_KEY": "k/db",
        "AWS_REGION": "eu-west-1",
    })
    assert conf["port"] == ("3456", "env")
    assert conf["env"] == ("test", "env")
    for key, ms in [("chat.token_ttl", 7 * 86400000), ("chat.stream_cooldown", 2500),
                    ("chat.max_stream_duration", 90000), ("chat.rate_window", 60000),
                    ("chat.s3_interval", 120000)]:
        value, source = conf[key]
        assert source == "env" and duration_ms(value) == ms, (key, conf[key])
    assert conf["chat.rate_max"] == ("3", "env")
    assert conf["chat.max_streams"] == ("7", "env")
    assert conf["chat.hls_base_url"] == ("https://cdn.example/hls", "env")
    assert conf["chat.s3_bucket"] == ("b", "env")
    assert conf["chat.s3_key"] == ("k/db", "env")
    assert conf["chat.region"] == ("eu-west-1", "env")
    # the P2PMESH_ form wins over the legacy name
    conf = chat_config({"MAX_CONCURRENT_STREAMS": "7", "P2PMESH_CHAT_MAX_STREAMS": "9"})
    assert conf["chat.max_streams"] == ("9", "env")


def test_a_server_configured_by_faltubaat_names_behaves_so(server_factory, tmp_path):
    db = tmp_path / "app" / "data" / "faltubaat.db"  # the directory is created
    srv = server_factory(role="chat", env={
        "DB_PATH": str(db), "JWT_SECRET": SECRET, "JWT_EXPIRES_IN": "2h",
        "RATE_LIMIT_MAX_REQUESTS": "3", "MAX_CONCURRENT_STREAMS": "7"})
    wait_ready(srv)
    assert db.exists()
    r = api(srv.port, "POST", "/api/register",
            {"username": "envuser", "password": "secret123", "gender": "other"})
    assert r.status == 201, r
    claims = jwt.decode(r.json["token"], SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 7200
    st = api(srv.port, "GET", "/api/broadcast-status")
    assert st.status == 200 and st.json["maxStreams"] == 7, st
    assert api(srv.port, "GET", "/api/verify-token", token=r.json["token"]).status == 200
    over = api(srv.port, "GET", "/api/broadcast-status")  # the 4th /api request
    assert over.status == 429 and "error" in over.json, over


def startup_error(tmp_path, *flags, env=None):
    r = run_cli("--role=chat", "--addr=127.0.0.1", "--port=0",
                "--database.url=sqlite:%s" % (tmp_path / "x.db"), *flags, env=env,
                timeout=20)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


def test_production_refuses_an_unsafe_jwt_secret(tmp_path):
    assert "jwt.secret" in startup_error(tmp_path, env={"NODE_ENV": "production"})
    assert "jwt.secret" in startup_error(tmp_path, "--env=production",
                                         "--jwt.secret=CHANGE_THIS_IN_PRODUCTION")
    assert "shorter than 32" in startup_error(tmp_path, "--env=production",
                                              "--jwt.secret=only-31-bytes-long-secret-value")


def test_production_accepts_a_strong_secret(server_factory, tmp_path):
    srv = server_factory("--env=production", "--jwt.secret=" + SECRET,
                         "--database.url=sqlite:%s" % (tmp_path / "p.db"), role="chat")
    wait_ready(srv)
    r = api(srv.port, "POST", "/api/register",
            {"username": "produser", "password": "secret123", "gender": "female"})
    assert r.status == 201
    jwt.decode(r.json["token"], SECRET, algorithms=["HS256"])


def test_development_without_a_secret_uses_a_random_one(server_factory, tmp_path):
    srv = server_factory("--database.url=sqlite:%s" % (tmp_path / "d.db"), role="chat")
    wait_ready(srv)
    r = api(srv.port, "POST", "/api/register",
            {"username": "devuser", "password": "secret123", "gender": "male"})
    assert r.status == 201
    token = r.json["token"]
    assert api(srv.port, "GET", "/api/verify-token", token=token).status == 200
    events = [json.loads(l).get("event") for l in srv.stdout_text().splitlines()
              if l.startswith("{")]
    assert "jwt_secret_random" in events
    # the secret is not a known one: a token signed with the test secret fails
    forged = jwt.encode(jwt.decode(token, options={"verify_signature": False}), SECRET,
                        algorithm="HS256")
    assert api(srv.port, "GET", "/api/verify-token", token=forged).status == 401
