"""Unsafe set-ups are refused at start, not run quietly: a daemon or the console beyond loopback without TLS, a
console nobody can enter, a short password typed in view; products are readable by the service's group."""

from __future__ import annotations

import logging
import os
import pty
import select
import stat
import time
from pathlib import Path

import pytest
from support import SMALL_CAMERA, VENV_BIN, telescope_daemon, toros_cli, write_config

from toros.config import ConfigError, load_config
from toros.runtime.files import atomic_write, set_file_mode
from toros.web.accounts import hash_password


@pytest.mark.parametrize("module", ["alert", "telescope", "preprocessor"])
def test_a_daemon_beyond_loopback_without_tls_is_refused_naming_the_key(tmp_path, module):
    config = write_config(tmp_path, **{module: {"ip": "0.0.0.0", "port": 0}})
    started = toros_cli("serve", module, "--config", str(config), timeout=60)
    assert started.returncode == 2 and "Traceback" not in started.stderr, started.stderr
    last = started.stderr.strip().splitlines()[-1]  # the log lines of the start, then the refusal
    assert last.startswith(f"toros: config error: {module}.ip: 0.0.0.0 is beyond loopback without TLS")
    assert last.endswith("configure TLS, or set security.allow_insecure_network: true")


def test_allow_insecure_network_lets_it_listen_and_says_so_at_every_start(make_config, start_daemon, caplog):
    config = make_config(
        security={"allow_insecure_network": True},
        telescope={"ip": "0.0.0.0", "port": 0, "mode": "manual", "camera": SMALL_CAMERA},
    )
    with caplog.at_level(logging.WARNING, logger="toros"):
        daemon = start_daemon(config, telescope_daemon)
    assert daemon.port
    warned = [r.getMessage() for r in caplog.records if "allow_insecure_network" in r.getMessage()]
    assert warned and "telescope.ip 0.0.0.0 without TLS" in warned[0]


def test_the_console_refuses_a_plaintext_network_and_an_empty_door(tmp_path):
    user = [{"name": "ana", "role": "operator", "password_hash": hash_password("a long enough secret")}]
    (tmp_path / "open").mkdir()
    open_config = write_config(tmp_path / "open", web={"ip": "0.0.0.0", "port": 0, "users": user})
    started = toros_cli("serve", "web", "--config", str(open_config), timeout=60)
    assert started.returncode == 2 and started.stderr.startswith(
        "toros: config error: web.ip: 0.0.0.0 is beyond loopback"
    )
    (tmp_path / "empty").mkdir()
    empty = write_config(tmp_path / "empty", web={"port": 0, "users": []})
    started = toros_cli("serve", "web", "--config", str(empty), timeout=60)
    assert started.returncode == 2
    assert (
        started.stderr.strip()
        == "toros: config error: web.users: no accounts: nobody could log in (add one, its hash from `toros web hash-password`)"
    )


def test_hash_password_wants_twelve_characters():
    short = toros_cli("web", "hash-password", input="short1\n")
    assert (
        short.returncode == 2 and short.stderr.strip() == "toros: the password has 6 characters: at least 12 are needed"
    )


PROMPTS = (b"Password (at least 12 characters, not shown): ", b"The same again: ")


def _on_a_terminal(*answers: str) -> tuple[int, str]:
    """Runs `toros web hash-password` on a pseudo-terminal, typing each answer once its prompt has appeared (so
    that no answer is typed while the terminal still echoes); (exit code, what the terminal showed)."""
    pid, terminal = pty.fork()
    if pid == 0:
        os.execv(str(VENV_BIN / "toros"), [str(VENV_BIN / "toros"), "web", "hash-password"])
    shown = b""
    answered = 0  # prompts answered; the next answer waits for the next prompt after what was seen so far
    after = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(terminal, 4096)
            except OSError:
                break  # the child is gone
            if not chunk:
                break
            shown += chunk
            if answered < len(answers) and (found := shown.find(PROMPTS[answered], after)) >= 0:
                after = found + len(PROMPTS[answered])
                os.write(terminal, answers[answered].encode() + b"\n")
                answered += 1
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_on_a_terminal_the_password_is_asked_twice_and_never_shown():
    code, shown = _on_a_terminal("correct horse battery", "correct horse battery")
    assert code == 0, shown
    assert "Password (at least 12 characters, not shown):" in shown and "The same again:" in shown
    assert "correct horse" not in shown and "$argon2id$" in shown
    code, shown = _on_a_terminal("correct horse battery", "correct horse batterx")
    assert code == 2 and "the two passwords differ: nothing was hashed" in shown


def test_products_are_readable_by_the_services_group(tmp_path, make_config):
    set_file_mode(0o640)
    with atomic_write(tmp_path / "product.fits") as stream:
        stream.write(b"x")
    assert stat.S_IMODE((tmp_path / "product.fits").stat().st_mode) == 0o640
    assert load_config(write_config(tmp_path, storage={"root": "data", "file_mode": "0600"})).storage.file_mode == 0o600
    with pytest.raises(ConfigError, match="0666: files that everyone may write are refused"):
        load_config(write_config(tmp_path, storage={"root": "data", "file_mode": "0666"}))


def test_a_daemons_frames_have_the_configured_mode(make_config, start_daemon, tmp_path):
    import grpc
    from support import run

    from toros.generated import toros_pb2 as pb
    from toros.generated.toros_pb2_grpc import FrontDeskStub

    config = make_config(
        storage={"root": "data", "file_mode": "0644"}, telescope={"port": 0, "mode": "manual", "camera": SMALL_CAMERA}
    )
    daemon = start_daemon(config, telescope_daemon)
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        status = run(
            FrontDeskStub(channel),
            pb.WorkOrder(take_calibrations=pb.TakeCalibrations(image_type=pb.IMAGE_TYPE_BIAS, count=1)),
        )
    frame = Path(status.products[0].path)
    assert stat.S_IMODE(frame.stat().st_mode) == 0o644
    set_file_mode(0o640)
