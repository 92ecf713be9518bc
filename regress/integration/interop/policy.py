"""A Postfix policy service (SMTPD_POLICY_README) that answers DUNNO and
records each request, for interop tests.

Postfix asks it while it handles a command (MAIL FROM, with
smtpd_delay_reject = no and smtpd_sender_restrictions =
check_policy_service inet:127.0.0.1:PORT), before it replies.  At that
moment it has read that command and nothing more; so bytes still waiting in
the kernel's receive queue of Postfix's socket for that client are commands
the client sent before it saw the reply: RFC 2920 pipelining, measured
outside the TLS layer.  Each request is recorded as a dict of its
attributes plus "rx_queue": the most bytes seen waiting there within
`window` seconds (a client that waits for the reply sends nothing then).

    with PolicyServer() as pol:
        ... "check_policy_service inet:127.0.0.1:%d" % pol.port ...
        pol.requests[0]["protocol_state"] == "MAIL"
"""
import ipaddress
import socket
import threading
import time


def _proc_addr(hexaddr):
    """"0900007F:0A1B" (/proc/net/tcp) -> ("127.0.0.9", 2587)."""
    h, p = hexaddr.split(":")
    ip = ipaddress.IPv4Address(bytes.fromhex(h)[::-1])
    return str(ip), int(p, 16)


def rx_queue(local, remote):
    """Bytes not yet read from the established TCP socket local<-remote,
    or None if there is no such socket.  local, remote: (ip, port)."""
    try:
        with open("/proc/net/tcp") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or fields[3] != "01":     # 01 = ESTABLISHED
            continue
        if (_proc_addr(fields[1]) == local and
                _proc_addr(fields[2]) == remote):
            return int(fields[4].split(":")[1], 16)
    return None


class PolicyServer:
    def __init__(self, host="127.0.0.1", window=0.5):
        self.host = host
        self.window = window
        self.requests = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._sock = None
        self.port = None

    def start(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, 0))
        s.listen(8)
        s.settimeout(0.1)
        self._sock, self.port = s, s.getsockname()[1]
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self, timeout=3.0):
        self._stop.set()
        for t in list(self._threads):
            t.join(timeout)
        if self._sock:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def snapshot(self):
        with self._lock:
            return [dict(r) for r in self.requests]

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, c):
        c.settimeout(0.2)
        buf = b""
        try:
            while not self._stop.is_set():
                while b"\n\n" not in buf:
                    try:
                        chunk = c.recv(4096)
                    except socket.timeout:
                        if self._stop.is_set():
                            return
                        continue
                    if not chunk:
                        return
                    buf += chunk
                    if len(buf) > 65536:
                        return
                req, buf = buf.split(b"\n\n", 1)
                attrs = dict(l.split("=", 1) for l in
                             req.decode("utf-8", "replace").splitlines()
                             if "=" in l)
                attrs["rx_queue"] = self._measure(attrs)
                with self._lock:
                    self.requests.append(attrs)
                c.sendall(b"action=DUNNO\n\n")
        except OSError:
            pass
        finally:
            c.close()

    def _measure(self, a):
        try:
            local = (a["server_address"], int(a["server_port"]))
            remote = (a["client_address"], int(a["client_port"]))
        except (KeyError, ValueError):
            return None
        most = rx_queue(local, remote)
        deadline = time.monotonic() + self.window
        while most is not None and most == 0 and \
                time.monotonic() < deadline:
            time.sleep(0.01)
            n = rx_queue(local, remote)
            if n is None:
                break
            most = max(most, n)
        return most
