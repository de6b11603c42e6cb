"""Command line and configuration: --help, --version, roles, --print-config,
--check-config, precedence of flags > env > file > defaults, env aliases."""

import re

import pytest

from helpers import duration_ms, run_cli, size_bytes

ROLES = ["signaling", "chat", "tunnel", "game", "lambda"]
LINE_RE = re.compile(r"^(\S+) = (.*?)  # (default|file|env|flag)$")


def print_config(*args, env=None):
    r = run_cli("--role=signaling", "--print-config", *args, env=env)
    assert r.returncode == 0, (r.returncode, r.stderr)
    conf = {}
    for line in r.stdout.splitlines():
        if not line.strip():
            continue
        m = LINE_RE.match(line)
        assert m, "print-config line not 'key = value  # source': %r" % line
        assert m.group(1) not in conf, "key printed twice: %s" % m.group(1)
        conf[m.group(1)] = (m.group(2), m.group(3))
    return conf, r


def one_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    assert len(lines) == 1, "expected exactly one stderr line, got %r" % text
    return lines[0]


# ----------------------------------------------------------------- basics


def test_help_lists_five_roles_one_line_each():
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for role in ROLES:
        hits = [l for l in lines if l.split() and l.split()[0] == role]
        assert len(hits) == 1, "role %s: lines %r in help:\n%s" % (role, hits, r.stdout)


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"p2pmesh \S+\n?", r.stdout), repr(r.stdout)


def test_unknown_role_exit_2_one_line():
    r = run_cli("--role=nosuchrole")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "nosuchrole" in one_line(r.stderr)


def test_lambda_outside_lambda_exit_2():
    """Without a Runtime API the lambda role says what is missing."""
    r = run_cli("--role=lambda", env={"AWS_LAMBDA_RUNTIME_API": ""})
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "AWS_LAMBDA_RUNTIME_API" in one_line(r.stderr)


def test_lambda_prints_dialect_and_lambda_keys():
    r = run_cli("--role=lambda", "--print-config",
                env={"CONNECTIONS_TABLE": "seed-table", "AWS_REGION": "eu-west-1"})
    assert r.returncode == 0, r.stderr
    assert "signaling.bootstrap_count = 5" in r.stdout
    assert "lambda.dynamodb_table = seed-table" in r.stdout
    assert "lambda.region = eu-west-1" in r.stdout
    assert "lambda.connection_ttl = 660s" in r.stdout


def test_role_from_env():
    r = run_cli("--print-config", env={"P2PMESH_ROLE": "game"})
    assert r.returncode == 0, r.stderr
    assert "game.raft_port = 50052" in r.stdout
    r = run_cli("--print-config", env={"P2PMESH_ROLE": "signaling"})
    assert r.returncode == 0, r.stderr
    assert "signaling.bootstrap_count = " in r.stdout


# ----------------------------------------------------------- print-config

CORE_KEYS = [
    "addr", "port", "admin_port", "public_url", "tls.cert", "tls.key",
    "tls.min_version", "log.level", "log.format", "ws.max_message",
    "ws.ping_interval", "ws.idle_timeout", "http.max_header",
    "http.header_timeout", "limits.max_connections",
    "limits.per_ip_connections", "limits.per_ip_rate", "limits.per_conn_rate",
    "limits.per_conn_burst", "limits.trusted_proxies", "origin.allow",
    "shutdown.grace", "jwt.secret",
]
SIGNALING_KEYS = [
    "signaling.bootstrap_count", "signaling.announce_max",
    "signaling.mailbox_max", "signaling.mailbox_ttl",
    "signaling.heartbeat_interval", "signaling.max_peers_per_realm",
]


def test_print_config_lists_every_key_with_default_source():
    conf, _ = print_config()
    for key in CORE_KEYS + SIGNALING_KEYS:
        assert key in conf, "missing %s in --print-config" % key
        assert conf[key][1] == "default", (key, conf[key])


def test_print_config_defaults():
    conf, _ = print_config()
    ints = {
        "signaling.bootstrap_count": 5,
        "signaling.announce_max": 64,
        "signaling.mailbox_max": 64,
        "signaling.max_peers_per_realm": 10000,
        "limits.max_connections": 10000,
        "limits.per_ip_connections": 256,
        "limits.per_conn_burst": 200,
    }
    for k, v in ints.items():
        assert int(conf[k][0]) == v, (k, conf[k])
    durations = {
        "signaling.mailbox_ttl": 30000,
        "signaling.heartbeat_interval": 30000,
        "ws.ping_interval": 25000,
        "ws.idle_timeout": 75000,
        "http.header_timeout": 10000,
        "shutdown.grace": 25000,
    }
    for k, v in durations.items():
        assert duration_ms(conf[k][0]) == v, (k, conf[k])
    assert size_bytes(conf["ws.max_message"][0]) == 64 * 1024, conf["ws.max_message"]
    assert size_bytes(conf["http.max_header"][0]) == 16 * 1024, conf["http.max_header"]
    assert conf["limits.per_ip_rate"][0].replace(" ", "") in ("100/10s", "100/10000ms"), conf["limits.per_ip_rate"]
    assert conf["limits.per_conn_rate"][0].replace(" ", "") in ("50/1s", "50/1000ms"), conf["limits.per_conn_rate"]


def test_secret_is_redacted_from_flag():
    conf, r = print_config("--jwt.secret=s3cr3t-from-flag-XYZ")
    assert conf["jwt.secret"] == ("<redacted>", "flag")
    assert "s3cr3t-from-flag-XYZ" not in r.stdout + r.stderr


def test_secret_from_env_file_is_redacted(tmp_path):
    f = tmp_path / "secret.txt"
    f.write_text("file-secret-ABC\n")
    conf, r = print_config(env={"P2PMESH_JWT_SECRET_FILE": str(f)})
    assert conf["jwt.secret"] == ("<redacted>", "env")
    assert "file-secret-ABC" not in r.stdout + r.stderr


def test_secret_from_env_is_redacted():
    conf, r = print_config(env={"P2PMESH_JWT_SECRET": "env-secret-QQQ"})
    assert conf["jwt.secret"] == ("<redacted>", "env")
    assert "env-secret-QQQ" not in r.stdout + r.stderr


def test_secret_unset_is_default():
    conf, _ = print_config()
    assert conf["jwt.secret"][1] == "default"


# ----------------------------------------------------------- check-config


def test_check_config_valid():
    r = run_cli("--role=signaling", "--check-config")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "flag,key",
    [
        ("--port=notanumber", "port"),
        ("--ws.max_message=12q", "ws.max_message"),
        ("--ws.ping_interval=soon", "ws.ping_interval"),
        ("--limits.per_ip_rate=lots", "limits.per_ip_rate"),
        ("--log.level=loud", "log.level"),
        ("--signaling.bootstrap_count=many", "signaling.bootstrap_count"),
    ],
)
def test_check_config_bad_value(flag, key):
    r = run_cli("--role=signaling", "--check-config", flag)
    assert r.returncode == 2, (flag, r.returncode, r.stderr)
    assert key in one_line(r.stderr)


def test_check_config_unknown_flag_key():
    r = run_cli("--role=signaling", "--check-config", "--no.such=1")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "no.such" in one_line(r.stderr)


def test_check_config_unknown_file_key(tmp_path):
    cfg = tmp_path / "p2pmesh.conf"
    cfg.write_text("# comment\nport = 7000\nbogus.key = 1\n")
    r = run_cli("--role=signaling", "--check-config", "--config=%s" % cfg)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "bogus.key" in one_line(r.stderr)


def test_check_config_bad_value_in_file(tmp_path):
    cfg = tmp_path / "p2pmesh.conf"
    cfg.write_text("ws.idle_timeout = forever\n")
    r = run_cli("--role=signaling", "--check-config", "--config=%s" % cfg)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "ws.idle_timeout" in one_line(r.stderr)


def test_bad_value_refuses_to_start():
    r = run_cli("--role=signaling", "--addr=127.0.0.1", "--port=notanumber", timeout=10)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "port" in one_line(r.stderr)


# ------------------------------------------------------------- precedence


def test_precedence_flag_env_file_default(tmp_path):
    cfg = tmp_path / "p2pmesh.conf"
    cfg.write_text(
        "# a comment line\n"
        "\n"
        "port = 1111\n"
        "ws.max_message = 1k\n"
        "log.level = warn\n"
        "signaling.bootstrap_count = 7\n"
    )
    conf, _ = print_config(
        "--config=%s" % cfg,
        "--port=3333",
        env={"P2PMESH_WS_MAX_MESSAGE": "2k", "P2PMESH_PORT": "2222"},
    )
    assert conf["port"] == ("3333", "flag")
    assert size_bytes(conf["ws.max_message"][0]) == 2048 and conf["ws.max_message"][1] == "env"
    assert conf["log.level"] == ("warn", "file")
    assert conf["signaling.bootstrap_count"] == ("7", "file")
    assert conf["ws.ping_interval"][1] == "default"


def test_env_beats_file(tmp_path):
    cfg = tmp_path / "p2pmesh.conf"
    cfg.write_text("signaling.mailbox_max = 9\n")
    conf, _ = print_config("--config=%s" % cfg, env={"P2PMESH_SIGNALING_MAILBOX_MAX": "11"})
    assert conf["signaling.mailbox_max"] == ("11", "env")


def test_config_file_from_env(tmp_path):
    cfg = tmp_path / "p2pmesh.conf"
    cfg.write_text("signaling.announce_max = 12\n")
    conf, _ = print_config(env={"P2PMESH_CONFIG": str(cfg)})
    assert conf["signaling.announce_max"] == ("12", "file")


@pytest.mark.parametrize(
    "text,ms",
    [("250ms", 250), ("30s", 30000), ("5m", 300000), ("1h", 3600000), ("7", 7000)],
)
def test_duration_forms(text, ms):
    conf, _ = print_config("--ws.idle_timeout=%s" % text)
    value, src = conf["ws.idle_timeout"]
    assert src == "flag"
    assert duration_ms(value) == ms, (text, value)


@pytest.mark.parametrize("text,n", [("64k", 65536), ("1m", 1 << 20), ("5000", 5000)])
def test_size_forms(text, n):
    conf, _ = print_config("--ws.max_message=%s" % text)
    value, src = conf["ws.max_message"]
    assert src == "flag"
    assert size_bytes(value) == n, (text, value)


# ------------------------------------------------------------ env aliases


@pytest.mark.parametrize(
    "env,key,check",
    [
        ({"SIGNALING_PORT": "4444"}, "port", lambda v: v == "4444"),
        ({"SIGNALING_ADDR": "127.0.0.2"}, "addr", lambda v: v == "127.0.0.2"),
        ({"SIGNALING_PUBLIC_URL": "https://sig.example.com"}, "public_url",
         lambda v: v == "https://sig.example.com"),
        ({"SIGNALING_HEARTBEAT_SECS": "12"}, "signaling.heartbeat_interval",
         lambda v: duration_ms(v) == 12000),
        ({"SIGNALING_MAILBOX_TTL_SECS": "45"}, "signaling.mailbox_ttl",
         lambda v: duration_ms(v) == 45000),
        ({"SIGNALING_ROOM_TTL_SECS": "46"}, "signaling.mailbox_ttl",
         lambda v: duration_ms(v) == 46000),
        # redis.url may carry a password, so it may be a redacted secret
        ({"SIGNALING_REDIS_URL": "redis://127.0.0.1:6390/0"}, "redis.url",
         lambda v: v in ("redis://127.0.0.1:6390/0", "<redacted>")),
        ({"SIGNALING_REDIS_KEY_PREFIX": "p2ptest:"}, "redis.key_prefix",
         lambda v: v == "p2ptest:"),
    ],
)
def test_signaling_env_aliases(env, key, check):
    conf, _ = print_config(env=env)
    assert key in conf, key
    value, src = conf[key]
    assert src == "env", (key, conf[key])
    assert check(value), (env, key, value)


def test_p2pmesh_env_beats_alias():
    conf, _ = print_config(env={"SIGNALING_PORT": "4444", "P2PMESH_PORT": "5555"})
    assert conf["port"] == ("5555", "env")
    conf, _ = print_config(env={"SIGNALING_HEARTBEAT_SECS": "12",
                                "P2PMESH_SIGNALING_HEARTBEAT_INTERVAL": "20s"})
    assert duration_ms(conf["signaling.heartbeat_interval"][0]) == 20000


def test_flag_beats_alias():
    conf, _ = print_config("--port=6666", env={"SIGNALING_PORT": "4444"})
    assert conf["port"] == ("6666", "flag")


def test_check_config_valid_file(tmp_path):
    cfg = tmp_path / "p2pmesh.conf"
    cfg.write_text("# ok\n\nport = 7000\nws.max_message = 128k\nsignaling.mailbox_ttl = 45s\n")
    r = run_cli("--role=signaling", "--check-config", "--config=%s" % cfg)
    assert r.returncode == 0, r.stderr


def test_print_config_output_reads_back_as_a_config_file(tmp_path):
    """--print-config writes 'key = value  # source'; fed back as a config
    file every value round-trips (trailing comments are comments)."""
    first, r = print_config("--ws.max_message=2k", "--origin.allow=http://a.example")
    path = tmp_path / "roundtrip.conf"
    path.write_text(r.stdout)
    second, _ = print_config("--config=%s" % path)
    assert {k: v for k, (v, _) in second.items()} == {
        k: v for k, (v, _) in first.items()
    }
    assert second["ws.max_message"] == ("2k", "file")
    assert second["origin.allow"] == ("http://a.example", "file")
    assert second["public_url"] == ("", "file")


def test_sample_config_is_valid_and_lists_every_default():
    """config/signaling.conf.sample must load, and set exactly the defaults
    (so it cannot drift from the code); every key is mentioned in it."""
    from pathlib import Path

    sample = Path(__file__).resolve().parents[2] / "config" / "signaling.conf.sample"
    defaults, _ = print_config()
    loaded, _ = print_config("--config=%s" % sample)
    assert {k: v for k, (v, _) in loaded.items()} == {
        k: v for k, (v, _) in defaults.items()}
    text = sample.read_text()
    for key in defaults:
        assert re.search(r"^#? ?%s =" % re.escape(key), text, re.M), key
