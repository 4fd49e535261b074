"""The embedded Postgres: the binaries of the pgserver wheel, run by novalog itself."""

from __future__ import annotations

import os
import signal
import subprocess
import warnings
from pathlib import Path

from novalog.process import ProcessSpec, StackError
from novalog.settings import Settings

PG_SYSTEM_USER = "pgserver"  # the user pgserver itself runs Postgres as under root


def _postgres_bin() -> Path:
    try:
        with warnings.catch_warnings():  # pgserver reads XDG_RUNTIME_DIR at import; unused here
            warnings.simplefilter("ignore")
            from pgserver import _commands  # the binaries' folder; pgserver has no public name
    except ImportError:
        raise StackError("embedded Postgres not found: `pip install pgserver`, "
                         "or set DATABASE_URL.") from None
    return Path(_commands.POSTGRES_BIN_PATH)


def data_dir(settings: Settings) -> Path:
    return settings.home / "pgdata"


def prepare_postgres(settings: Settings, logs: Path) -> ProcessSpec:
    """initdb on first use (as a non-root user when we are root), then the server's spec."""
    bindir = _postgres_bin()
    data = data_dir(settings)
    user = None
    if os.geteuid() == 0:  # postgres refuses to run as root
        from pgserver import utils  # imported after _postgres_bin(): warnings already silenced

        user = PG_SYSTEM_USER
        entry = utils.ensure_user_exists(user)
        assert entry is not None, f"could not create the system user {user}"
        data.mkdir(parents=True, exist_ok=True)
        utils.ensure_prefix_permissions(data)
        for sub in ("bin", "lib", "share"):
            if (bindir.parent / sub).exists():
                utils.ensure_folder_permissions(bindir.parent / sub, 0o005)
        for path in (data, *data.rglob("*")):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        data.chmod(0o700)
    if not (data / "PG_VERSION").exists():
        result = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres",
             "--encoding=UTF8", "--no-instructions"],
            capture_output=True, text=True, user=user,
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed in {data}:\n{result.stderr.strip()}")
    version = (data / "PG_VERSION").read_text().strip()
    return ProcessSpec(
        name="postgres", kind="postgres",
        argv=[str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1",
              "-p", str(settings.postgres_port), "-k", str(data), "-c", "max_connections=200"],
        address=f"127.0.0.1:{settings.postgres_port}", log_path=logs / "postgres.log",
        user=user, stop_signal=signal.SIGINT,  # SIGINT is Postgres's "fast shutdown"
        version=f"postgresql {version}",
    )


def embedded_database_url(settings: Settings) -> str:
    return f"postgresql://postgres@127.0.0.1:{settings.postgres_port}/postgres"
