from __future__ import annotations

from pathlib import Path

import pytest

from peerlight.node.config import Config, ConfigError, load_config, render_default_config

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "node.toml"
    file.write_text(text)
    return file


def test_example_file_is_the_rendered_schema_and_parses_to_the_defaults(tmp_path: Path) -> None:
    example = REPO / "node.example.toml"
    assert example.read_text() == render_default_config(), "regenerate node.example.toml from the schema"
    assert load_config(example, tmp_path) == Config()


def test_example_documents_every_option() -> None:
    import dataclasses

    text = render_default_config()
    for section in dataclasses.fields(Config):
        assert f"\n[{section.name}]\n" in text
        for option in dataclasses.fields(getattr(Config(), section.name)):
            assert f"\n# {option.metadata['doc']}\n{option.name} = " in text


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), tmp_path) == Config()


def test_values_are_read(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[daemon]\nlog_level = "debug"\nshutdown_grace_seconds = 3\n[node]\nname = "den"\n'), tmp_path
    )
    assert config.daemon.log_level == "debug"
    assert config.daemon.shutdown_grace_seconds == 3.0
    assert config.node.name == "den"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[daemon]\nlog_levle = 'info'\n", "daemon.log_levle", "unknown option"),
        ("[deamon]\n", "deamon", "unknown option"),
        ("[daemon]\nlog_level = 'loud'\n", "daemon.log_level", "must be one of"),
        ("[daemon]\nlog_backups = '5'\n", "daemon.log_backups", "expected an integer, got a string"),
        ("[daemon]\nlog_backups = true\n", "daemon.log_backups", "expected an integer, got a boolean"),
        ("[daemon]\nlog_backups = 1.5\n", "daemon.log_backups", "expected an integer"),
        ("[daemon]\nlog_max_bytes = 10\n", "daemon.log_max_bytes", "at least 4096"),
        ("[control]\nmax_frame_bytes = 99999999999\n", "control.max_frame_bytes", "at most"),
        ("[node]\nname = 3\n", "node.name", "expected a string"),
        ("daemon = 3\n", "daemon", "expected a table"),
        ("[daemon]\nlog_file = ''\n", "daemon.log_file", "expected a path"),
        # nan passes every range check (all comparisons with it are false); inf passes a max-less one
        ("[daemon]\nshutdown_grace_seconds = nan\n", "daemon.shutdown_grace_seconds", "finite number"),
        ('[network]\nbootstrap = "/ip4/1.2.3.4/tcp/1/p2p/12D3KooW"\n', "network.bootstrap", "array of strings"),
        ('[network]\nbootstrap = ["/ip4/1.2.3.4/tcp/4001"]\n', "network.bootstrap", "not a multiaddr"),
        ('[network]\nbootstrap = ["/ip4/1.2.3.4/tcp/x/p2p/12D3KooW"]\n', "network.bootstrap", "not a multiaddr"),
        ("[index]\nforget_missing_after_seconds = inf\n", "index.forget_missing_after_seconds", "finite number"),
        ("[models]\nidle_unload_seconds = -inf\n", "models.idle_unload_seconds", "finite number"),
        ('[ui]\nremote_listen = "nas.local"\n', "ui.remote_listen", "not an IP address"),
        ('[ui]\nremote_listen = "0.0.0.0"\nport = 7781\nremote_port = 7781\n', "ui.remote_port", "must differ from ui.port"),
        ('[ui]\ntls_certificate = "ui.crt"\n', "ui.tls_key", "set both"),
        ('[ui]\ntls_key = "ui.key"\n', "ui.tls_certificate", "set both"),
        ('[ui]\nremote_hosts = ["nas local"]\n', "ui.remote_hosts", "not a host name"),
        ("[ui]\nmax_connections = 1\n", "ui.max_connections", "at least 4"),
    ],
)
def test_invalid_values_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(file, tmp_path)
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(file) in str(caught.value) and key in str(caught.value)


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    file = write(tmp_path, "[daemon\n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_config(file, tmp_path)
    assert caught.value.file == str(file)


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="peerlight init"):
        load_config(tmp_path / "absent.toml", tmp_path)


def test_unusable_log_path_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    file = write(tmp_path, f"[daemon]\nlog_file = '{tmp_path / 'a-file' / 'log.txt'}'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(file, tmp_path)
    assert caught.value.key == "daemon.log_file"
    assert "not a writable directory" in caught.value.reason


def test_log_path_that_is_a_directory_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    file = write(tmp_path, "[daemon]\nlog_file = 'logs'\n")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(file, tmp_path)


def test_relative_paths_are_inside_the_data_dir(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), tmp_path)
    assert config.resolve_path(tmp_path, config.daemon.log_file) == tmp_path / "logs" / "peerlight.log"
