"""config.yaml: every mistake names its key and what is wrong; secrets only from env."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from bot.config import Secrets, load_settings, settings_from_mapping
from bot.config_types import parse_duration
from bot.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_loads_with_paths_beside_it() -> None:
    settings = load_settings(ROOT / "config.yaml")
    assert settings.language == "fr"
    assert settings.timezone == "Europe/Paris"
    assert settings.storage.path == ROOT / "supportbot.db"
    assert settings.knowledge.path == ROOT / "knowledge.yaml"
    assert settings.conversation.abandon_after == timedelta(minutes=15)
    assert settings.survey.cooldown == timedelta(days=7)
    assert settings.digest.schedule == "0 9 * * mon"


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({"survey": {"cooldown": "soon"}}, "survey.cooldown", "not a duration"),
        ({"conversation": {"abandon_after": "-5m"}}, "conversation.abandon_after", "duration"),
        ({"telegram": {"agent_idz": [1]}}, "telegram.agent_idz", "unknown key"),
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"business_hours": {"mon": "9h-18h"}}, "business_hours.mon", "range like 09:00-12:30"),
        ({"business_hours": {"mon": "14:00-12:00"}}, "business_hours.mon", "ends before"),
        ({"business_hours": {"holidays": ["noel"]}}, "business_hours.holidays[0]", "date"),
        ({"timezone": "Mars/Olympus"}, "timezone", "not a known time zone"),
        ({"language": "de"}, "language", "'fr' or 'en'"),
        ({"desk": "email"}, "desk", "'telegram', 'slack' or 'web'"),
        ({"web": {"rate_limit": "fast"}}, "web.rate_limit", "not a rate like 20/10s"),
        ({"web": {"rate_limit": "0/10s"}}, "web.rate_limit", "must be positive"),
        ({"web": {"allowed_origins": ["shop.example"]}}, "web.allowed_origins", "https://"),
        ({"web": {"port": 70000}}, "web.port", "65535"),
        ({"telegram": {"agent_ids": [1, "bob"]}}, "telegram.agent_ids[1]", "integer"),
        ({"telegram": {"api_url": "api.telegram.org"}}, "telegram.api_url", "http"),
        ({"digest": {"schedule": "mondays"}}, "digest.schedule", "cron"),
        ({"digest": {"targets": ["#general"]}}, "digest.targets", "slack:C0123ABC"),
        ({"knowledge": {"threshold": 2}}, "knowledge.threshold", "less than or equal to 1"),
        ({"messages": {"fr": {"greting": "Salut"}}}, "messages", "greting"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(data)
    assert err.value.key == key
    assert reason in err.value.reason


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("language: fr\nsurvey:\n  cooldown: [7d\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert re.fullmatch(rf"{re.escape(str(path))}:\d+:\d+", err.value.key)
    assert "invalid YAML" in err.value.reason


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(path)


def test_durations() -> None:
    assert parse_duration("30s") == timedelta(seconds=30)
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration(90) == timedelta(seconds=90)
    with pytest.raises(ValueError, match="duration"):
        parse_duration("15 minutes")


def test_secrets_only_from_environment_and_never_shown() -> None:
    secrets = Secrets.from_env({"TELEGRAM_BOT_TOKEN": "123:SECRET", "SLACK_BOT_TOKEN": " "})
    assert secrets.telegram_bot_token == "123:SECRET"
    assert secrets.slack_bot_token is None
    assert "SECRET" not in repr(secrets)
    assert secrets.values() == ["123:SECRET"]
    with pytest.raises(ConfigError, match="unknown key"):
        settings_from_mapping({"telegram": {"token": "123:abc"}})


def test_message_overrides_apply() -> None:
    from bot.texts import Texts

    settings = settings_from_mapping({"messages": {"fr": {"greeting": "Salut{name} !"}}})
    texts = Texts(settings.language, settings.messages)
    assert texts.get("fr", "greeting", name="") == "Salut !"
    assert texts.get("en", "greeting", name="").startswith("Hello")
    assert texts.language_of("en-GB") == "en"
    assert texts.language_of("de") == "fr"
