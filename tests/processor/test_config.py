from __future__ import annotations

from dataclasses import fields

import pytest

from otel_mlmon import environment_variables
from otel_mlmon.processor.config import ENV_PREFIX, ProcessorConfig, load


def test_flags_over_environment_over_file_over_defaults(tmp_path) -> None:
    path = tmp_path / "processor.yaml"
    path.write_text("http_endpoint: 0.0.0.0:9000\ngrpc_endpoint: 0.0.0.0:9001\ntick_s: 5\nreferences: [a.json]\n")
    environ = {ENV_PREFIX + "GRPC_ENDPOINT": "127.0.0.1:7001", ENV_PREFIX + "MAX_PENDING": "42"}
    config = load({"grpc_endpoint": None, "http_endpoint": "127.0.0.1:8000"}, environ, str(path))
    assert config.http_endpoint == "127.0.0.1:8000"  # flag
    assert config.grpc_endpoint == "127.0.0.1:7001"  # environment
    assert config.tick_s == 5.0 and config.references == ("a.json",)  # file
    assert config.max_pending == 42 and config.store == ProcessorConfig().store  # environment, default


@pytest.mark.parametrize(("flags", "environ", "text", "message"), [
    ({"http_endpoint": "nowhere"}, {}, None, "setting http_endpoint: 'nowhere' is not HOST:PORT"),
    ({}, {ENV_PREFIX + "MAX_PENDING": "lots"}, None, f"setting max_pending from {ENV_PREFIX}MAX_PENDING"),
    ({}, {}, "tick_s: -1\n", "setting tick_s: must be positive"),
    ({}, {}, "tik_s: 1\n", "unknown setting(s) tik_s"),
    ({}, {}, "- a\n- b\n", "must be a mapping"),
    ({}, {ENV_PREFIX + "ALERTMANAGER": "alertmanager:9093"}, None, "setting alertmanager"),
    ({}, {ENV_PREFIX + "REVISION_INTERVAL_S": "-1"}, None, "setting revision_interval_s: must be 0 or more"),
])
def test_invalid_settings_refuse_to_start_naming_the_setting(tmp_path, flags, environ, text, message) -> None:
    path = None
    if text is not None:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
    with pytest.raises(ValueError) as raised:
        load(flags, environ, str(path) if path else None)
    assert message in str(raised.value)


def test_every_setting_has_a_documented_environment_variable() -> None:
    for field in fields(ProcessorConfig):
        assert getattr(environment_variables, ENV_PREFIX + field.name.upper()) == ENV_PREFIX + field.name.upper()
