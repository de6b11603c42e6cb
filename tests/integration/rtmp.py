"""A real nginx-rtmp sidecar and ffmpeg publishers for the chat role's
live-stream tests (test_chat_streams.py, docs/chat.md "Live streams").

- missing(): why the RTMP tests cannot run here (None when they can).
- CallbackTap: a byte-transparent TCP relay between nginx-rtmp and the chat
  server that records every callback (path, form fields, status, Location),
  so a test can tell a 409 from a 429 without the server logging either.
- Nginx: nginx with libnginx-mod-rtmp in the foreground (daemon off,
  master_process off), everything (config, pid, error log, HLS) in a
  private directory, RTMP on a free loopback port.
- Publisher: ffmpeg publishing a lavfi test pattern for a bounded time.

Every wait is bounded. RTMP_TEST_LOG=debug in the environment raises
nginx's error_log level (info by default) when a failure needs it.
"""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

from helpers import free_port

RTMP_MODULE_DIR = Path("/usr/lib/nginx/modules")
RTMP_MODULE = RTMP_MODULE_DIR / "ngx_rtmp_module.so"


def nginx_bin():
    found = shutil.which("nginx")
    if found:
        return found
    for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(p, os.X_OK):
            return p
    return None


def missing():
    """None, or the reason the RTMP tests must be skipped."""
    if nginx_bin() is None:
        return "nginx is not installed (apt-get install nginx-light)"
    if not RTMP_MODULE.exists():
        return "the nginx RTMP module is missing (%s; apt-get install libnginx-mod-rtmp)" % RTMP_MODULE
    if shutil.which("ffmpeg") is None:
        return "ffmpeg is not installed (apt-get install ffmpeg)"
    return None


# ------------------------------------------------------------ callback tap


class Exchange:
    """One HTTP request nginx-rtmp made and the answer it got."""

    def __init__(self, t_request, t_response, request, response):
        self.t_request = t_request      # time.monotonic() when the request was complete
        self.t_response = t_response    # when the answer was complete (connection closed)
        self.request = request
        self.response = response
        head, _, body = request.partition(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        self.method = parts[0] if parts else ""
        self.path = parts[1] if len(parts) > 1 else ""
        self.form = {k: v[0] for k, v in
                     urllib.parse.parse_qs(body.decode("latin-1"), keep_blank_values=True).items()}
        rhead, _, self.body = response.partition(b"\r\n\r\n")
        rlines = rhead.decode("latin-1").split("\r\n")
        try:
            self.status = int(rlines[0].split(" ")[1])
        except (IndexError, ValueError):
            self.status = None
        self.headers = {}
        for h in rlines[1:]:
            k, sep, v = h.partition(":")
            if sep:
                self.headers[k.strip().lower()] = v.strip()

    @property
    def name(self):
        return self.form.get("name")

    def __repr__(self):
        return "<%s %s name=%r call=%r -> %s %r%s>" % (
            self.method, self.path, self.name, self.form.get("call"), self.status,
            self.body[:60].decode("latin-1"),
            (" Location=%r" % self.headers["location"]) if "location" in self.headers else "")


class CallbackTap:
    """Listens on a free loopback port and relays every connection, bytes
    unchanged, to 127.0.0.1:upstream_port; records each exchange."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.exchanges = []
        self.errors = []
        self.lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._accept, name="callback-tap", daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn):
        req, resp = bytearray(), bytearray()
        t_req = [None]
        up = None
        try:
            conn.settimeout(15)
            up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=15)

            def upstream_pump():
                try:
                    while True:
                        data = conn.recv(65536)
                        if not data:
                            break
                        req.extend(data)
                        t_req[0] = time.monotonic()
                        up.sendall(data)
                    up.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

            pump = threading.Thread(target=upstream_pump, daemon=True)
            pump.start()
            while True:
                data = up.recv(65536)
                if not data:
                    break
                resp.extend(data)
                conn.sendall(data)
        except OSError as e:
            self.errors.append(repr(e))
        finally:
            t_resp = time.monotonic()
            # shutdown() first: close() alone does not send the FIN while
            # the pump thread is still blocked in recv() on the socket.
            for s in (conn, up):
                if s is not None:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    try:
                        s.close()
                    except OSError:
                        pass
            if req:
                ex = Exchange(t_req[0] or t_resp, t_resp, bytes(req), bytes(resp))
                with self.lock:
                    self.exchanges.append(ex)

    def calls(self, path=None, name=None):
        """Recorded exchanges (arrival order), filtered by path and name."""
        with self.lock:
            out = list(self.exchanges)
        return [e for e in out
                if (path is None or e.path == path) and (name is None or e.name == name)]

    def wait_call(self, path, name=None, timeout=20.0, after=None):
        """The first recorded exchange on path (and name) completed after
        `after` (a monotonic time), waiting up to timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.calls(path, name):
                if after is None or e.t_response >= after:
                    return e
            if time.monotonic() >= deadline:
                raise AssertionError("no %s callback (name=%r) within %.0fs; callbacks: %r"
                                     % (path, name, timeout, self.calls()))
            time.sleep(0.05)

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------- nginx


CONF = """\
load_module {module};
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log {level};
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        application live {{
            live on;
            on_publish http://127.0.0.1:{cb}/stream/start;
            on_publish_done http://127.0.0.1:{cb}/stream/stop;
            on_update http://127.0.0.1:{cb}/stream/update;
            notify_update_timeout {update};
            notify_method post;
            push rtmp://127.0.0.1:{port}/hls;
        }}
        application hls {{
            live on;
            allow publish 127.0.0.1;
            deny publish all;
            hls on;
            hls_path {dir}/hls;
            hls_fragment 1s;
        }}
    }}
}}
"""


class Nginx:
    """nginx + libnginx-mod-rtmp in the foreground; the application `live`
    of docs/chat.md with its callbacks on 127.0.0.1:callback_port."""

    def __init__(self, workdir, callback_port, update_timeout="2s", start_timeout=10.0):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hls = self.dir / "hls"
        self.hls.mkdir(exist_ok=True)
        self.port = free_port()
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(CONF.format(module=RTMP_MODULE, dir=self.dir, port=self.port,
                                         cb=callback_port, update=update_timeout,
                                         level=os.environ.get("RTMP_TEST_LOG", "info")))
        self.error_log = self.dir / "error.log"
        self.out_path = self.dir / "nginx.out"
        self._out = open(self.out_path, "wb")
        self.argv = [nginx_bin(), "-p", str(self.dir) + "/", "-c", str(self.conf),
                     "-g", "daemon off; master_process off;"]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited with %s during startup\nargv: %s\n%s"
                                   % (self.proc.returncode, self.argv, self.diag()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx RTMP port %d not open within %.0fs\n%s"
                           % (self.port, timeout, self.diag()))

    def url(self, key):
        return "rtmp://127.0.0.1:%d/live/%s" % (self.port, key)

    def log_text(self):
        try:
            return self.error_log.read_text(errors="replace")
        except OSError:
            return ""

    def hls_files(self):
        return sorted(p.name for p in self.hls.iterdir()) if self.hls.is_dir() else []

    def playlists(self):
        return [n for n in self.hls_files() if n.endswith(".m3u8")]

    def diag(self, tail=4000):
        try:
            out = self.out_path.read_text(errors="replace")
        except OSError:
            out = ""
        return ("--- nginx error.log (%s) ---\n%s\n--- nginx stdout/stderr ---\n%s\n--- hls: %r"
                % (self.error_log, self.log_text()[-tail:], out[-1000:], self.hls_files()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._out.closed:
            self._out.close()
        return self.proc.returncode


# ---------------------------------------------------------------- ffmpeg


class Publisher:
    """ffmpeg publishing a 320x240 test pattern with a sine tone to url for
    at most `seconds` (-t) at the native rate (-re)."""

    def __init__(self, url, seconds, logpath):
        self.url = url
        self.seconds = seconds
        self.logpath = Path(logpath)
        self._log = open(self.logpath, "wb")
        self.argv = [
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning",
            "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=15",
            "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-pix_fmt", "yuv420p", "-g", "15",
            "-c:a", "aac", "-b:a", "64k",
            "-t", str(seconds), "-f", "flv", url,
        ]
        self.started = time.monotonic()
        self.ended = None
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def poll(self):
        rc = self.proc.poll()
        if rc is not None and self.ended is None:
            self.ended = time.monotonic()
        return rc

    def running(self):
        return self.poll() is None

    def wait(self, timeout):
        """The exit status; AssertionError (after killing it) past timeout."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("ffmpeg still running after %.0fs: %s\n%s"
                                 % (timeout, " ".join(self.argv), self.log_text()))
        return self.poll()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.poll()
        if not self._log.closed:
            self._log.close()

    def log_text(self):
        try:
            return self.logpath.read_text(errors="replace")
        except OSError:
            return ""
