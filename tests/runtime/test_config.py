"""Configuration: the template is complete and valid; mistakes are one line naming the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import REPO, toros_cli

from toros.config import Config, load_config
from toros.runtime.config import ConfigError, find_config_file


def test_the_template_is_valid_and_documents_the_defaults():
    template = load_config(REPO / "toros.conf.yaml")
    defaults = Config()
    assert template.model_dump(exclude={"source"}) == defaults.model_dump(exclude={"source"}) | {
        "alert": template.alert.model_dump()
    }
    assert template.alert.observatories[0].name == "macon"
    assert template.preprocessor.http == "http://127.0.0.1:50053"
    assert template.logging.file == Path("/etc/toros/logs/toros.log") and template.logging.level == "INFO"


@pytest.mark.parametrize(
    "text, message",
    [
        ("alert: {prot: 1}\n", "alert.prot: unknown key"),
        (
            "telescope:\n  site: {name: x, latitude: 91, longitude: 0}\n",
            "telescope.site.latitude: Input should be less than or equal to 90",
        ),
        ("logging: {level: LOUD}\n", "logging.level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("preprocessor: {port: many}\n", "preprocessor.port: Input should be a valid integer"),
        ("clock: {rate: 0}\n", "clock.rate: Input should be greater than 0"),
        ("databse: {path: x}\n", "databse: unknown key"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("alert: [\n", "not valid YAML at line"),
        ("database: {url: 'mysql://x'}\n", "database.url: Value error, unsupported database scheme"),
        (
            "security: {token: '${TOROS_TEST_UNSET_VARIABLE}'}\n",
            "security.token: environment variable TOROS_TEST_UNSET_VARIABLE is not set",
        ),
        ("security: {tls: {cert: a.pem}}\n", "security.tls: Value error, cert and key must be given together"),
    ],
)
def test_mistakes_name_the_key_and_the_file(tmp_path, text, message):
    path = tmp_path / "node.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: "), str(error.value)
    assert message in str(error.value)


def test_secrets_come_from_the_environment_and_relative_paths_from_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TOROS_DB_PASSWORD", "hunter2")
    path = tmp_path / "node.yaml"
    path.write_text("database: {url: 'postgresql://toros:${TOROS_DB_PASSWORD}@db/toros'}\nstorage: {root: data}\n")
    config = load_config(path)
    assert config.database.url.get_secret_value() == "postgresql://toros:hunter2@db/toros"
    assert "hunter2" not in repr(config)
    assert config.storage.root == tmp_path / "data"


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("TOROS_CONFIG", str(tmp_path / "env.yaml"))
    assert find_config_file(str(tmp_path / "given.yaml")) == tmp_path / "given.yaml"
    assert find_config_file(None) == tmp_path / "env.yaml"
    monkeypatch.delenv("TOROS_CONFIG")
    assert find_config_file(None) in (None, Path("/etc/toros/toros.conf.yaml"))


def test_serve_with_a_bad_config_is_one_line_and_exit_code_2(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("telescope: {mdoe: manual}\n")
    result = toros_cli("serve", "telescope", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"toros: config error: {path}: telescope.mdoe: unknown key"
    missing = toros_cli("serve", "alert", "--config", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"toros: config error: {tmp_path / 'absent.yaml'}: config file not found"


def test_an_unwritable_log_file_is_a_config_error(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    path = tmp_path / "node.yaml"
    path.write_text(
        f"logging: {{file: {tmp_path}/blocker/toros.log}}\ntelescope: {{port: 0}}\nstorage: {{root: data}}\ndatabase: {{path: t.db}}\n"
    )
    result = toros_cli("serve", "telescope", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("toros: config error: logging.file: cannot write")
    assert "Traceback" not in result.stderr


def test_daemons_sharing_one_log_file_rotate_it_without_losing_lines(tmp_path):
    import subprocess
    import sys

    log = tmp_path / "logs" / "toros.log"
    code = """
import logging, sys
from pathlib import Path
from toros.runtime.config import LoggingConfig
from toros.runtime.logs import setup_logging
setup_logging(LoggingConfig(file=Path(sys.argv[1]), level="INFO", max_bytes=20000, backup_count=50), sys.argv[2], stderr=False)
for i in range(400):
    logging.getLogger("toros.test").info("line %d of %s", i, sys.argv[2])
"""
    writers = [
        subprocess.Popen([sys.executable, "-c", code, str(log), name])
        for name in ("alert", "telescope", "preprocessor")
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
    lines = [line for path in log.parent.glob("toros.log*") for line in path.read_text().splitlines()]
    for name in ("alert", "telescope", "preprocessor"):
        mine = [line for line in lines if line.endswith(f"of {name}")]
        assert len(mine) == 400 and all(f" {name} [-] " in line for line in mine)
    assert len(list(log.parent.glob("toros.log.*"))) >= 3, "rotated"
