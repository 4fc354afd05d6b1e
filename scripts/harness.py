"""Shared pieces of scripts/bench.py and scripts/chaos.py: a PostgreSQL of their own, /proc readings, ports."""
import asyncio
import glob
import os
import shutil
import socket
import struct
import subprocess

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

    def sql(self, statement):
        out = subprocess.run([pg_bin("psql"), "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", self.port,
                              "-U", "herald", "-d", "herald", "-c", statement],
                             check=True, capture_output=True, text=True, env=self.env).stdout
        return out.strip()

    def scalar(self, statement):
        return int(self.sql(statement) or 0)

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
