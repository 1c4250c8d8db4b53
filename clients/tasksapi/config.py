"""Where the URL and the token come from: arguments, then `TASKS_API_URL` / `TASKS_API_TOKEN`,
then a config file (`TASKS_CONFIG`, default `~/.config/tasks/config.toml`):

    url = "http://127.0.0.1:8080"
    token = "tapi_..."

    [profiles.admin]          # selected by --profile admin or TASKS_PROFILE=admin
    token = "..."
"""

from __future__ import annotations

import os
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasksapi.errors import ConfigError

URL_ENV, TOKEN_ENV, CONFIG_ENV, PROFILE_ENV = "TASKS_API_URL", "TASKS_API_TOKEN", "TASKS_CONFIG", "TASKS_PROFILE"
TOKEN_PREFIX = "tapi_"


@dataclass(frozen=True)
class Settings:
    url: str
    token: str


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or Path.home() / ".config" / "tasks" / "config.toml")


def _file(profile: str | None) -> dict[str, Any]:
    path = config_path()
    if not path.is_file():
        if profile:
            raise ConfigError(f"profile {profile!r} asked for, but there is no config file at {path}")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    if profile:
        section = data.get("profiles", {}).get(profile)
        if not isinstance(section, dict):
            raise ConfigError(f"no [profiles.{profile}] section in {path}")
        data = {**data, **section}
    return data


def resolve(
    url: str | None = None, token: str | None = None, profile: str | None = None, *, use_file: bool = True
) -> Settings:
    """The URL and token to use; a ConfigError says which one is missing and how to set it."""
    profile = profile or os.environ.get(PROFILE_ENV) or None
    url = url or os.environ.get(URL_ENV) or None
    token = token or os.environ.get(TOKEN_ENV) or None
    if use_file and (url is None or token is None or profile):
        data = _file(profile)
        if profile:  # a profile chosen on purpose wins over the environment
            url, token = data.get("url") or url, data.get("token") or token
        else:
            url, token = url or data.get("url"), token or data.get("token")
    if not url:
        raise ConfigError(f"no API URL: set {URL_ENV} (or pass it: --url, base_url=) or put url in {config_path()}")
    if not token:
        raise ConfigError(f"no token: set {TOKEN_ENV} (or pass it: --token, token=) or put token in {config_path()}")
    if not str(url).startswith(("http://", "https://")):
        raise ConfigError(f"the API URL must start with http:// or https:// (got {url!r})")
    return Settings(str(url).rstrip("/"), str(token))


def agent_id_of(token: str) -> str | None:
    """The agent id an agent token carries (`tapi_<agent id hex>_<secret>`); None for the admin
    token or anything else. Only a default for `created_by`: the server checks the token."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    parts = token.split("_")
    if len(parts) < 3:
        return None
    try:
        return str(uuid.UUID(hex=parts[1]))
    except ValueError:
        return None
