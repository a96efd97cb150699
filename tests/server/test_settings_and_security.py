"""Server settings validation, secret handling and the schema's migrations."""

from __future__ import annotations

import pytest

from protocol.errors import ConfigError
from server import security
from server.settings import DEFAULT_SECRET, load_settings


def test_default_secret_is_refused_outside_dev(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    assert settings.secret_key == DEFAULT_SECRET
    with pytest.raises(ConfigError, match="secret_key is the default"):
        settings.refuse_insecure_defaults()
    load_settings(data_dir=tmp_path, dev=True).refuse_insecure_defaults()


def test_file_then_env_then_overrides(tmp_path, monkeypatch):
    config = tmp_path / "server.toml"
    config.write_text('port = 9000\nself_service = "anyone"\nsecret_key = "' + "s" * 40 + '"\n[response_policy]\nnormal = 30\n')
    monkeypatch.setenv("HELPLINE_PORT", "9100")
    settings = load_settings(config, data_dir=tmp_path)
    assert settings.port == 9100 and settings.self_service == "anyone"
    assert settings.response_policy.normal == 30 and settings.response_policy.high == 120
    assert load_settings(config, port=9200).port == 9200


@pytest.mark.parametrize("text, setting", [
    ('port = "eighty"', "port"),
    ('self_service = "everyone"', "self_service"),
    ('secret_key = "short"', "secret_key"),
    ("[response_policy]\nnormal = -5", "response_policy.normal"),
    ("unknown_setting = 1", "unknown_setting"),
])
def test_invalid_settings_name_the_setting(tmp_path, text, setting):
    config = tmp_path / "server.toml"
    config.write_text(text + "\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert f"Invalid server setting {setting}" in err.value.message


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)


def test_password_hashes():
    stored = security.hash_password("correct horse battery staple")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert security.verify_password("correct horse battery staple", stored)
    assert not security.verify_password("correct horse battery stapl", stored)
    assert not security.verify_password("x", "not-a-hash")
    assert security.hash_password("same") != security.hash_password("same")  # salted


def test_tokens_and_digests():
    token = security.new_token(security.TOKEN_PREFIX_USER)
    assert token.startswith("hlu_") and len(token) > 40
    assert security.token_digest(token) != token and len(security.token_digest(token)) == 64
    assert security.keyed_digest("k1" * 20, "ABCD1234") != security.keyed_digest("k2" * 20, "ABCD1234")


def test_example_config_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "deploy" / "server.toml.example"
    settings = load_settings(example)
    assert settings.self_service == "enrolled" and settings.rate_limits.pairing_per_address == 10


def test_example_config_keeps_blobs_locally_in_the_data_dir():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "deploy" / "server.toml.example"
    settings = load_settings(example)
    assert settings.blobs.backend == "local" and settings.blobs.dir == settings.data_dir / "blobs"


S3_TABLE = '[blobs]\nbackend = "s3"\ns3_bucket = "helpline-bundles"\ns3_region = "eu-west-1"\n'
S3_FLAT = 'blob_backend = "s3"\ns3_bucket = "helpline-bundles"\ns3_region = "eu-west-1"\n'


@pytest.mark.parametrize("text", [S3_TABLE, S3_FLAT], ids=["table", "flat"])
def test_blob_settings_from_the_blobs_table_or_the_flat_names(tmp_path, text):
    config = tmp_path / "server.toml"
    config.write_text(text)
    blobs = load_settings(config, data_dir=tmp_path).blobs
    assert (blobs.backend, blobs.s3_bucket, blobs.s3_region) == ("s3", "helpline-bundles", "eu-west-1")
    assert blobs.dir == tmp_path / "blobs"


def test_blob_settings_from_the_environment_old_and_new(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPLINE_BLOBS__BACKEND", "s3")
    monkeypatch.setenv("HELPLINE_BLOBS__S3_BUCKET", "new-spelling")
    monkeypatch.setenv("HELPLINE_S3_PREFIX", "old/")
    monkeypatch.setenv("helpline_blob_dir", str(tmp_path / "elsewhere"))
    blobs = load_settings(data_dir=tmp_path).blobs
    assert (blobs.backend, blobs.s3_bucket, blobs.s3_prefix) == ("s3", "new-spelling", "old/")
    assert blobs.dir == tmp_path / "elsewhere"


def test_the_environment_may_repeat_a_file_setting_in_the_other_spelling(tmp_path, monkeypatch):
    config = tmp_path / "server.toml"
    config.write_text(S3_TABLE)
    monkeypatch.setenv("HELPLINE_S3_BUCKET", "helpline-bundles")
    assert load_settings(config).blobs.s3_bucket == "helpline-bundles"


@pytest.mark.parametrize("where", ["file", "environment"])
def test_both_spellings_disagreeing_is_a_config_error(tmp_path, monkeypatch, where):
    config = tmp_path / "server.toml"
    if where == "file":
        config.write_text('s3_bucket = "old-bucket"\n' + S3_TABLE)
    else:
        config.write_text(S3_TABLE)
        monkeypatch.setenv("HELPLINE_S3_BUCKET", "old-bucket")
    with pytest.raises(ConfigError, match="^Invalid server settings: s3_bucket = 'old-bucket' disagrees with blobs.s3_bucket") as err:
        load_settings(config)
    assert err.value.status == 3


def test_an_s3_backend_without_a_bucket_is_refused_at_start(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPLINE_BLOBS__BACKEND", "s3")
    with pytest.raises(ConfigError, match="blobs.s3_bucket"):
        load_settings(data_dir=tmp_path, secret_key="s" * 40).refuse_insecure_defaults()


def test_unknown_blob_settings_are_named(tmp_path):
    config = tmp_path / "server.toml"
    config.write_text('[blobs]\nbucket = "b"\n')
    with pytest.raises(ConfigError, match="Invalid server setting blobs.bucket"):
        load_settings(config)
