"""Settings as flags and ``IRIS_*`` variables, the same way in both programs.

It lives with the contract because both sides parse their settings with it, and
the predictor may import nothing of training beyond ``training.store``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, CliSettingsSource, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


class ProgramSettings(BaseSettings):
    """What every program's settings share: the IRIS_ prefix, the store, logging."""

    model_config = SettingsConfigDict(
        env_prefix="IRIS_", cli_kebab_case=False, extra="forbid"
    )

    model_uri: str = Field(
        "./models",
        description="The model store: a directory (the PVC's /models) or "
        "s3://bucket/prefix (endpoint and keys from IRIS_S3_*).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log verbosity."
    )


def parse_cli(
    settings_class: type[S],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> tuple[S, argparse.Namespace]:
    """Add settings_class's fields to parser as flags, parse argv, build the settings.

    A value wins from its flag, then its IRIS_* variable, then its default. An
    invalid value exits with status 2 and a usage message, as argparse does.
    """
    cli: CliSettingsSource[argparse.Namespace] = CliSettingsSource(
        settings_class, root_parser=parser
    )
    arguments = parser.parse_args(argv)
    try:
        settings = settings_class(_cli_settings_source=cli(parsed_args=arguments))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
        )
        parser.error(f"invalid setting: {problems}")
    return settings, arguments
