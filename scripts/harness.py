"""Shared pieces of scripts/bench.py and scripts/chaos.py: a PostgreSQL of their own, receivers (nginx, asyncio),
/proc readings, ports, and the environment a worker at default settings gets."""
import asyncio
import glob
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def proc_cpu(pid):
    """CPU seconds (user + system) a process has used."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except OSError:
        return 0.0


def proc_status(pid, key):
    """A /proc/PID/status value in bytes (VmRSS, VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Session:
    """Statements sent to one long-lived psql over its standard input, each answer read up to a marker line."""

    MARKER = "__herald_bench_end__"

    def __init__(self, pg):
        self.process = subprocess.Popen(
            pg.psql(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=pg.env, bufsize=1)

    def sql(self, statement):
        self.process.stdin.write(statement.strip().rstrip(";") + ";\n\\echo " + self.MARKER + "\n")
        self.process.stdin.flush()
        lines = []
        for line in self.process.stdout:
            if line.rstrip("\n") == self.MARKER:
                break
            lines.append(line.rstrip("\n"))
        else:
            raise RuntimeError(f"psql session ended: {lines[-3:]}")
        if any(l.startswith(("ERROR:", "psql:")) for l in lines):
            raise RuntimeError("\n".join(lines))
        return "\n".join(lines).strip()

    def scalar(self, statement):
        return int(self.sql(statement) or 0)

    def close(self):
        try:
            self.process.stdin.close()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()


class Postgres:
    """A PostgreSQL cluster started with scripts/pg in `directory`, queried through psql."""

    def __init__(self, directory, fast=False):
        self.directory = directory
        command = ["bash", os.path.join(ROOT, "scripts/pg"), "start", "--dir", directory] + (["--fast"] if fast else [])
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        self.url = [l for l in out.splitlines() if l.startswith("DATABASE_URL=")][0][len("DATABASE_URL="):]
        self.port = open(os.path.join(directory, "port")).read().strip()
        self.password = open(os.path.join(directory, "password")).read().strip()
        self.env = dict(os.environ, PGPASSWORD=self.password)

    def psql(self, *arguments):
        """The psql command line for this cluster's herald database, unaligned and quiet, then `arguments`."""
        return [pg_bin("psql"), "-XAtq", "-h", "127.0.0.1", "-p", self.port, "-U", "herald", "-d", "herald",
                *arguments]

    def sql(self, statement):
        out = subprocess.run(self.psql("-v", "ON_ERROR_STOP=1", "-c", statement),
                             check=True, capture_output=True, text=True, env=self.env).stdout
        return out.strip()

    def script(self, text):
        """Runs SQL given on standard input (for statements too long for a command line)."""
        out = subprocess.run(self.psql("-v", "ON_ERROR_STOP=1", "-f", "-"),
                             input=text, check=True, capture_output=True, text=True, env=self.env).stdout
        return out.strip()

    def scalar(self, statement):
        return int(self.sql(statement) or 0)

    def session(self):
        """One psql connection kept open for repeated small queries (a drain's poll, 20 a second). A new psql per
        poll cost a process start and a backend's start and authentication each time: 10–20 % of this machine's
        two cores during a drain, taken from what is being measured."""
        return Session(self)

    def migrate(self, herald):
        subprocess.run([herald, "migrate", "--database-url", self.url, "--sql-dir", os.path.join(ROOT, "sql")],
                       check=True, capture_output=True)

    def cpu_seconds(self):
        """CPU used so far by the postmaster and every backend (children of the postmaster)."""
        postmaster = int(open(os.path.join(self.directory, "data", "postmaster.pid")).readline())
        total = proc_cpu(postmaster)
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    if int(fields[1]) == postmaster:
                        total += (int(fields[11]) + int(fields[12])) / TICKS
                except (OSError, IndexError):
                    pass
        return total

    def restart(self):
        subprocess.run(["bash", os.path.join(ROOT, "scripts/pg"), "restart", "--dir", self.directory], check=True,
                       capture_output=True)

    def stop(self):
        subprocess.run(["bash", os.path.join(ROOT, "scripts/pg"), "stop", "--dir", self.directory])


def serve_http(port, respond, ready):
    """A minimal HTTP/1.1 keep-alive server on 127.0.0.1:port, run forever in the calling thread.

    `respond(headers)` (lower-cased names) is awaited per request and returns the raw response bytes, None to
    close the connection without answering, or "reset" to abort it with a TCP RST.
    """
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower().decode()] = value.strip().decode()
                await reader.readexactly(int(headers.get("content-length", "0")))
                answer = await respond(headers)
                if answer is None:
                    writer.close()
                    return
                if answer == "reset":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def worker_env(database_url, extra=None):
    """The environment of a `herald work` process at Herald's default settings.

    Every HERALD_* variable inherited from the caller's shell is dropped, so nothing tunes the workers by accident;
    only these are set, none of them a performance setting:
      HERALD_ALLOWED_NETWORKS=127.0.0.0/8  the receivers are on loopback, which Herald refuses by default (SSRF guard)
      HERALD_LOG_LEVEL=warning             keeps the benchmark's terminal readable
      HERALD_METRICS_ADDR=127.0.0.1:0      metrics stay on, as by default (with their backlog sampling), but on a
                                           free port each, so several workers on one machine do not collide
    `extra` adds what a scenario is about (it says so when it runs).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(DATABASE_URL=database_url, HERALD_ALLOWED_NETWORKS="127.0.0.0/8", HERALD_LOG_LEVEL="warning",
               HERALD_METRICS_ADDR="127.0.0.1:0")
    env.update(extra or {})
    return env


ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"


def self_signed_certificate(directory):
    """A self-signed certificate for 127.0.0.1 (RSA 2048), as `openssl req` makes it: (cert.pem, key.pem)."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", key,
                    "-out", cert, "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    os.chmod(key, 0o644)
    return cert, key


class Nginx:
    """nginx from Debian's packages as a receiver, one worker process, keep-alive, logging `$msec $http_x_webhook_id`
    for every request.

    `locations` maps a location prefix to its directives; by default `/` answers 200 at once. Directives using
    `echo_*` (e.g. `echo_read_request_body; echo_sleep 0.2; echo ok;`) load the echo module
    (libnginx-mod-http-echo), which answers late without costing CPU. `tls=True` serves HTTPS with a self-signed
    certificate; `ca_file` is then the file for HERALD_CA_FILE.
    """

    def __init__(self, directory, locations=None, tls=False):
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o777)
        self.directory = directory
        self.port = free_port()
        self.tls = tls
        self.log_path = os.path.join(directory, "access.log")
        open(self.log_path, "w").close()
        locations = locations or {"/": 'return 200 "ok";'}
        body = "\n".join(f"        location {prefix} {{ {directives} }}" for prefix, directives in locations.items())
        module = f"load_module {ECHO_MODULE};" if "echo_" in body else ""
        if module and not os.path.exists(ECHO_MODULE):
            raise SystemExit(f"{ECHO_MODULE} is missing: apt-get install libnginx-mod-http-echo")
        listen = f"listen 127.0.0.1:{self.port} backlog=4096;"
        if tls:
            self.ca_file, key = self_signed_certificate(directory)
            listen = (f"listen 127.0.0.1:{self.port} ssl backlog=4096;\n        ssl_certificate {self.ca_file};\n"
                      f"        ssl_certificate_key {key};\n        ssl_session_cache shared:SSL:1m;")
        config = os.path.join(directory, "nginx.conf")
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        with open(config, "w") as f:
            f.write(f"""{module}
{user}
worker_processes 1;
daemon off;
error_log {directory}/error.log warn;
pid {directory}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
    log_format herald '$msec $http_x_webhook_id';
    access_log {self.log_path} herald buffer=256k flush=1s;
    client_body_temp_path {directory}/body;
    client_body_buffer_size 1m;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        {listen}
{body}
    }}
}}
""")
        self.process = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", config, "-p", directory],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("nginx did not start; see " + directory + "/error.log")

    def url_for(self, path):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    @property
    def url(self):
        return self.url_for("/webhooks")

    def requests(self):
        """Requests logged so far (waits for nginx's one-second log flush)."""
        time.sleep(1.2)
        with open(self.log_path, "rb") as f:
            return sum(1 for _ in f)

    def receipts(self, since_offset):
        """{delivery id: receipt time (s)} for lines written after since_offset (waits for nginx's flush)."""
        time.sleep(1.2)
        result = {}
        with open(self.log_path) as f:
            f.seek(since_offset)
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    result[parts[1]] = float(parts[0])
        return result

    def offset(self):
        time.sleep(1.2)
        return os.path.getsize(self.log_path)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


class LimitedReceiver(threading.Thread):
    """A receiver that serves only `limit` requests at once: every request beyond that waits (its connection held
    open) until a slot frees, then gets `work_s` of work and a 200. Like a real overloaded server, it does not notice
    a client that gave up: an abandoned request still takes its turn and its slot.

    `answered` holds the time of every answer, `abandoned` counts answers whose client had already gone.
    """

    def __init__(self, limit, work_s=0.1):
        super().__init__(daemon=True)
        self.port = free_port()
        self.limit = limit
        self.work_s = work_s
        self.answered = []
        self.waiting_peak = 0
        self.ready = threading.Event()

    def run(self):
        state = {"semaphore": None, "waiting": 0}

        async def respond(headers):
            if state["semaphore"] is None:
                state["semaphore"] = asyncio.Semaphore(self.limit)
            state["waiting"] += 1
            self.waiting_peak = max(self.waiting_peak, state["waiting"])
            async with state["semaphore"]:
                state["waiting"] -= 1
                await asyncio.sleep(self.work_s)
            self.answered.append(time.time())
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

        serve_http(self.port, respond, self.ready)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/limited"
