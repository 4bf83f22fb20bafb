"""`airagent image`: the runtime image of kubernetes environments, for CI."""

from __future__ import annotations

from typing import Annotated

import typer

from airagent import config as config_module
from airagent.config import ConfigError
from interface.cli.base import DEFAULT_CONFIG, ConfigOpt, PipelineOpt, app, friendly

image_app = typer.Typer(no_args_is_help=True, help="The runtime image of kubernetes environments, for CI.")
app.add_typer(image_app, name="image")


@image_app.command("tag")
@friendly
def image_tag(
    pipeline: PipelineOpt,
    sha: Annotated[str | None, typer.Option(help="the commit (default: head of the branch)")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Print `<repository>:<runtime hash>` of a commit: the tag CI builds and pushes, then passes to notify
    or deploy with --image. The same hash the build stage computes; nothing is built."""
    from temporalio.exceptions import ApplicationError

    from activities.build import image_tag as tag_of

    settings = config_module.load_pipeline(pipeline, config)
    if settings.image is None:
        raise ConfigError(
            f"{config}: pipeline {pipeline} has no `image:` settings; add image.repository "
            "to give its kubernetes environments a runtime image"
        )
    try:
        print(tag_of(settings, sha))
    except ApplicationError as err:  # a commit whose Dockerfile path leaves the repository
        raise ConfigError(err.message) from None


# --- config ---------------------------------------------------------------------------


# --- local environments ------------------------------------------------------------
