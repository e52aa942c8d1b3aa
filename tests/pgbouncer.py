"""A real PgBouncer (Debian's package, 1.18) in transaction mode, for tests.

It pools every database of the test server (`* =`), so each test's own
database goes through it as it is. PgBouncer refuses to run as root: as
root it is started as `postgres`.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.server.conftest import server_environment
from tests.support import POOLED, free_port


class Bouncer:
    def __init__(self, process: subprocess.Popen[bytes], port: int, directory: Path) -> None:
        self.process, self.port, self.directory = process, port, directory

    def log(self) -> str:
        return (self.directory / "pgbouncer.log").read_text(errors="replace")

    def url_for(self, database_url: str) -> str:
        """The same database, reached through this PgBouncer."""
        url = make_url(database_url).set(host="127.0.0.1", port=self.port)
        POOLED.add(url.database or "")
        return url.render_as_string(hide_password=False)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_pgbouncer(server_url: str) -> Bouncer:
    """Starts PgBouncer in front of the server `server_url` names; skips the
    test where it is not installed (`.ci/run` installs it)."""
    executable = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(executable).exists():
        pytest.skip("PgBouncer is not installed (apt-get install pgbouncer; .ci/run does)")
    url = make_url(server_url)
    directory = Path(tempfile.mkdtemp(prefix="pgbouncer-", dir="/tmp"))
    port = free_port()
    (directory / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={url.host or "127.0.0.1"} port={url.port or 5432} user={url.username or "postgres"}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
max_client_conn = 400
default_pool_size = 20
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""
    )
    command = [executable, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:  # it will not run as root
        shutil.chown(directory, "postgres")
        command = ["runuser", "-u", "postgres", "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Bouncer(process, port, directory)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log = directory / "pgbouncer.log"
                raise AssertionError(
                    f"PgBouncer did not start: {log.read_text() if log.exists() else ''}"
                ) from None
            time.sleep(0.1)


def pooled_environment(bouncer: Bouncer, database_url: str, data_dir: Path) -> dict[str, str]:
    """The README's settings for PgBouncer 1.18 in transaction mode."""
    return server_environment(
        bouncer.url_for(database_url),
        data_dir,
        DB_STATEMENT_CACHE_SIZE="0",
        DATABASE_LISTEN_URL=database_url,
    )
