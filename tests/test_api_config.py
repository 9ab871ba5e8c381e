"""The [api] and [[webhooks]] sections: bad values stop start-up with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import parse_config
from monitor.core.config import ConfigError


@pytest.mark.parametrize(("data", "where"), [
    ({"api": {}}, "api: Value error, give the bearer token with exactly one of token_env or token_file"),
    ({"api": {"token_env": "T", "listen": "localhost:8025"}}, "api.listen"),
    ({"api": {"token_env": "T", "listen": "127.0.0.1"}}, "api.listen"),
    ({"api": {"token_env": "T", "max_connections": 0}}, "api.max_connections"),
    ({"api": {"token_env": "T", "token": "inline"}}, "api.token: unknown key"),
    ({"webhooks": [{"url": "ftp://x.example/h", "secret_env": "S"}]}, "webhooks.0.url"),
    ({"webhooks": [{"url": "http://x.example/h", "secret_env": "S", "events": ["bounce", "nope"]}]}, "webhooks.0.events"),
    ({"webhooks": [{"url": "http://x.example/h"}]}, "exactly one of secret, secret_env or secret_file"),
    ({"webhooks": [{"url": "http://x.example/h", "url_env": "U", "secret_env": "S"}]}, "exactly one of url or url_env"),
    ({"webhooks": [{"name": "a", "url": "http://x.example/1", "secret_env": "S"},
                   {"name": "a", "url": "http://x.example/2", "secret_env": "S"}]}, "repeated: a"),
])
def test_bad_sections_name_the_key(data, where):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert where in str(err.value)


def test_good_sections_and_relative_paths(tmp_path: Path):
    config = parse_config({"api": {"listen": "[::1]:8025", "token_file": "secrets/api-token"},
                           "webhooks": [{"url": "https://hooks.example/x?k=1", "secret_file": "secrets/hook",
                                         "events": ["*"]}]}, base_dir=tmp_path)
    assert config.api is not None and config.api.listen == "[::1]:8025"
    assert config.api.token_file == tmp_path / "secrets" / "api-token"
    hook = config.webhooks[0]
    assert hook.secret_file == tmp_path / "secrets" / "hook" and "action" in hook.events
    assert hook.key.startswith("url-") and "k=1" not in repr(hook)
    assert parse_config({}).api is None and parse_config({}).webhooks == []
