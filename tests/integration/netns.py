"""Network namespaces for partition tests (docs tooling section 7).

    lab = NetLab(3, tag)      # needs root, ip (iproute2) and nft
    lab.addr(i)               # 10.a.b.(i+1), node i's address
    lab.exec_argv(i, argv)    # argv run inside node i's namespace
    lab.partition(i)          # nftables drop rules: node i <-> the other nodes
    lab.heal(i)
    lab.close()               # deletes everything it made, idempotent

Layout: a "switch" namespace holding a bridge; one namespace per node,
each with a veth whose other end is on the bridge; one more veth from the
test's own (root) namespace to the bridge, so the test reaches every node
directly at 10.a.b.x (as a client). Names carry the test process's pid
and a tag, and the /24 is derived from the pid, so parallel runs do not
clash. A partition drops only traffic between node i and the other nodes
(in and out on its veth): the test can still ask the cut-off node what it
thinks, as a client on its side of the split would.
"""

import os
import shutil
import subprocess


def netns_missing():
    """Why partition tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root (network namespaces and nftables need root)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return "%s is not installed (apt-get install %s)" % (
                tool, "iproute2" if tool == "ip" else "nftables")
    return None


def _run(argv, check=True, stdin=None):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20, input=stdin)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), r.returncode,
                                                   r.stderr.strip()))
    return r


class NetLab:
    def __init__(self, n, tag):
        pid = os.getpid()
        self.n = n
        self.prefix = "pmt%d%s" % (pid, tag)
        self.switch = self.prefix + "sw"
        self.nodes = ["%sn%d" % (self.prefix, i) for i in range(n)]
        self.host_if = "pmc%d" % (pid % 10000000)  # <= 15 bytes
        self.net = "10.%d.%d" % (200 + pid % 50, (pid // 50) % 256)
        self.made = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def addr(self, i):
        return "%s.%d" % (self.net, i + 1)

    @property
    def client_addr(self):
        return "%s.254" % self.net

    def _build(self):
        _run(["ip", "netns", "add", self.switch])
        self.made.append(("ns", self.switch))
        _run(["ip", "-n", self.switch, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.switch, "link", "set", "br0", "up"])
        for i, ns in enumerate(self.nodes):
            _run(["ip", "netns", "add", ns])
            self.made.append(("ns", ns))
            _run(["ip", "-n", self.switch, "link", "add", "v%d" % i, "type", "veth",
                  "peer", "name", "e0", "netns", ns])
            _run(["ip", "-n", self.switch, "link", "set", "v%d" % i, "master", "br0"])
            _run(["ip", "-n", self.switch, "link", "set", "v%d" % i, "up"])
            _run(["ip", "-n", ns, "addr", "add", self.addr(i) + "/24", "dev", "e0"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "link", "set", "e0", "up"])
        # the test's own side: root namespace <-> bridge
        _run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "vc",
              "netns", self.switch])
        self.made.append(("link", self.host_if))
        _run(["ip", "-n", self.switch, "link", "set", "vc", "master", "br0"])
        _run(["ip", "-n", self.switch, "link", "set", "vc", "up"])
        _run(["ip", "addr", "add", self.client_addr + "/24", "dev", self.host_if])
        _run(["ip", "link", "set", self.host_if, "up"])

    def exec_argv(self, i, argv):
        return ["ip", "netns", "exec", self.nodes[i]] + list(argv)

    def partition(self, i):
        """Drop everything between node i and the other nodes."""
        others = ", ".join(self.addr(j) for j in range(self.n) if j != i)
        script = (
            "table inet pmtest {\n"
            "  chain in { type filter hook input priority 0; policy accept;\n"
            "    iifname \"e0\" ip saddr { %s } drop\n  }\n"
            "  chain out { type filter hook output priority 0; policy accept;\n"
            "    oifname \"e0\" ip daddr { %s } drop\n  }\n"
            "}\n" % (others, others))
        _run(["ip", "netns", "exec", self.nodes[i], "nft", "-f", "-"], stdin=script)

    def rules(self, i):
        return _run(["ip", "netns", "exec", self.nodes[i], "nft", "list", "ruleset"]).stdout

    def heal(self, i):
        _run(["ip", "netns", "exec", self.nodes[i], "nft", "delete", "table", "inet",
              "pmtest"])

    def close(self):
        """Delete what was made (namespaces take their veths and nft tables
        with them); safe to call twice."""
        while self.made:
            kind, name = self.made.pop()
            if kind == "ns":
                _run(["ip", "netns", "del", name], check=False)
            else:
                _run(["ip", "link", "del", name], check=False)
