"""The tunnel role's certificate generator, --tunnel.gen_certs=DIR
(docs/tunnel.md, Certificates), checked with the openssl CLI: the chain
verifies, keys are P-256 with mode 0600, SANs and extendedKeyUsage are
right, an existing CA is reused, bad input exits 2 with one stderr line,
and the files make a real mutual-TLS handshake between openssl s_server
and s_client."""

import calendar
import os
import shutil
import stat
import subprocess
import time

import pytest

from helpers import free_port, run_cli

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="openssl CLI not installed")

LEAVES = ("server", "agent")


def gen(d, *flags):
    return run_cli("--role=tunnel", "--tunnel.gen_certs=%s" % d, *flags,
                   timeout=30)


def gen_ok(d, *flags):
    r = gen(d, *flags)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r


def one_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    assert len(lines) == 1, "expected exactly one stderr line, got %r" % text
    return lines[0]


def openssl(*args, cwd=None):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def x509(d, name, *args):
    return openssl("x509", "-in", str(d / ("%s.crt" % name)), "-noout", *args)


def text(d, name):
    return x509(d, name, "-text")


def verify(d, *names):
    out = openssl("verify", "-CAfile", "ca.crt",
                  *["%s.crt" % n for n in names], cwd=d)
    for n in names:
        assert "%s.crt: OK" % n in out, out


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_default_set(tmp_path):
    d = tmp_path / "certs"
    r = gen_ok(d)
    for f in ("ca.key", "ca.crt", "server.key", "server.crt", "agent.key",
              "agent.crt"):
        assert (d / f).is_file(), f
        assert "wrote %s" % (d / f) in r.stdout, (f, r.stdout)
    assert mode(d) == 0o700
    verify(d, *LEAVES)

    for name in ("ca",) + LEAVES:
        assert mode(d / ("%s.key" % name)) == 0o600, name
        assert mode(d / ("%s.crt" % name)) == 0o644, name
        key = (d / ("%s.key" % name)).read_text()
        assert key.startswith("-----BEGIN PRIVATE KEY-----"), name  # PKCS#8
        assert "ASN1 OID: prime256v1" in openssl(
            "pkey", "-in", str(d / ("%s.key" % name)), "-noout", "-text"), name
        t = text(d, name)
        assert "Version: 3 (0x2)" in t, name
        assert "ecdsa-with-SHA256" in t, name
        assert "ASN1 OID: prime256v1" in t, name
        serial = x509(d, name, "-serial").strip().split("=", 1)[1]
        assert len(serial) == 32, serial  # 128 random bits

    ca = text(d, "ca")
    assert "Subject: O = p2pmesh, CN = p2pmesh tunnel CA" in ca
    assert "X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:0" in ca
    assert "X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign" in ca
    assert "X509v3 Subject Key Identifier" in ca

    srv = text(d, "server")
    assert "Subject: O = p2pmesh, CN = p2pmesh-tunnel" in srv
    assert ("DNS:p2pmesh-tunnel, DNS:localhost, IP Address:127.0.0.1"
            in srv), srv
    assert "TLS Web Server Authentication" in srv
    assert "TLS Web Client Authentication" not in srv

    agent = text(d, "agent")
    assert "Subject: O = p2pmesh, CN = agent" in agent
    assert "TLS Web Client Authentication" in agent
    assert "TLS Web Server Authentication" not in agent

    for leaf in (srv, agent):
        assert "CA:FALSE" in leaf
        assert "X509v3 Key Usage: critical\n                Digital Signature" in leaf
        assert "X509v3 Subject Key Identifier" in leaf
        assert "X509v3 Authority Key Identifier" in leaf


def asn1_epoch(stamp):
    return calendar.timegm(time.strptime(stamp, "%b %d %H:%M:%S %Y GMT"))


def validity_days(d, name):
    out = x509(d, name, "-startdate", "-enddate")
    dates = dict(line.split("=", 1) for line in out.splitlines())
    start = asn1_epoch(dates["notBefore"].replace("  ", " "))
    end = asn1_epoch(dates["notAfter"].replace("  ", " "))
    return start, (end - start) / 86400


def test_validity(tmp_path):
    d = tmp_path / "certs"
    gen_ok(d)
    start, days = validity_days(d, "server")
    assert days == 825
    now = time.time()
    assert now - 400 < start < now - 200, "notBefore not ~5 min back"
    assert validity_days(d, "agent")[1] == 825
    assert validity_days(d, "ca")[1] == 3650


def test_second_run_reuses_ca(tmp_path):
    d = tmp_path / "certs"
    gen_ok(d)
    ca_crt, ca_key = (d / "ca.crt").read_bytes(), (d / "ca.key").read_bytes()
    agent = (d / "agent.crt").read_bytes()
    server = (d / "server.crt").read_bytes()
    gen_ok(d, "--tunnel.cert_clients=bob")
    assert (d / "ca.crt").read_bytes() == ca_crt
    assert (d / "ca.key").read_bytes() == ca_key
    assert (d / "agent.crt").read_bytes() == agent  # not in the list: kept
    assert (d / "server.crt").read_bytes() != server  # regenerated
    assert mode(d / "bob.key") == 0o600
    assert "Subject: O = p2pmesh, CN = bob" in text(d, "bob")
    verify(d, "server", "agent", "bob")
    assert not [p.name for p in d.iterdir() if p.name.startswith(".")]


def test_custom_names_clients_days(tmp_path):
    d = tmp_path / "certs"
    gen_ok(d, "--tunnel.cert_names= tunnel.example.com , *.edge.example ",
           "--tunnel.cert_clients=laptop, build-01.ci",
           "--tunnel.cert_days=30")
    srv = text(d, "server")
    assert "Subject: O = p2pmesh, CN = tunnel.example.com" in srv
    assert ("DNS:tunnel.example.com, DNS:*.edge.example, "
            "IP Address:127.0.0.1") in srv, srv
    assert "localhost" not in srv
    verify(d, "server", "laptop", "build-01.ci")
    assert not (d / "agent.crt").exists()
    assert validity_days(d, "laptop")[1] == 30


@pytest.mark.parametrize("flag,word", [
    ("--tunnel.cert_clients=../x", "../x"),
    ("--tunnel.cert_clients=agent,ca", "ca"),
    ("--tunnel.cert_clients=server", "server"),
    ("--tunnel.cert_clients=a b", "a b"),
    ("--tunnel.cert_clients=", "tunnel.cert_clients"),
    ("--tunnel.cert_names=", "tunnel.cert_names"),
    ("--tunnel.cert_names=bad_host!", "bad_host!"),
    ("--tunnel.cert_days=0", "tunnel.cert_days"),
    ("--tunnel.cert_days=3651", "tunnel.cert_days"),
])
def test_bad_input_exits_2(tmp_path, flag, word):
    d = tmp_path / "certs"
    r = gen(d, flag)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert word in one_line(r.stderr)
    assert not d.exists() or not list(d.iterdir())


def test_ca_crt_without_key_exits_2(tmp_path):
    d = tmp_path / "certs"
    gen_ok(d)
    ca_crt = (d / "ca.crt").read_bytes()
    (d / "ca.key").unlink()
    server = (d / "server.crt").read_bytes()
    r = gen(d)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "ca.key" in one_line(r.stderr)
    assert (d / "ca.crt").read_bytes() == ca_crt
    assert not (d / "ca.key").exists()
    assert (d / "server.crt").read_bytes() == server


def wait_for(path, needle, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, path.read_text(errors="replace")
        time.sleep(0.05)
    raise AssertionError("no %r in %s within %.0fs: %r"
                         % (needle, path, timeout, path.read_text()))


def s_client(d, port, hostname, cert="agent"):
    args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
            "-servername", hostname, "-CAfile", "ca.crt",
            "-verify_return_error", "-verify_hostname", hostname]
    if cert:
        args += ["-cert", "%s.crt" % cert, "-key", "%s.key" % cert]
    return subprocess.run(args, cwd=d, input="", capture_output=True,
                          text=True, timeout=15)


def test_mutual_tls_handshake(tmp_path):
    d = tmp_path / "certs"
    gen_ok(d)
    port = free_port()
    log = tmp_path / "s_server.log"
    with open(log, "w") as out:
        srv = subprocess.Popen(
            ["openssl", "s_server", "-accept", "127.0.0.1:%d" % port,
             "-cert", "server.crt", "-key", "server.key", "-CAfile", "ca.crt",
             "-Verify", "1", "-verify_return_error"],
            cwd=d, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(log, "ACCEPT", srv)
        r = s_client(d, port, "p2pmesh-tunnel")
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "Verify return code: 0 (ok)" in r.stdout, r.stdout
        wait_for(log, "CN = agent", srv)  # the server verified our cert
        r = s_client(d, port, "localhost")
        assert r.returncode == 0, (r.stdout, r.stderr)
        r = s_client(d, port, "wrong.example")
        assert r.returncode != 0, "hostname mismatch was accepted"
    finally:
        srv.kill()
        srv.wait(10)
