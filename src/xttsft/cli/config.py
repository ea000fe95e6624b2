"""``xttsft config``: every effective setting and where it came from."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from xttsft.cli._command import command
from xttsft.cli._common import console, handle_errors, state
from xttsft.hardware import hardware_facts, recommend, whisper_model_for
from xttsft.paths import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.settings import Settings


def register(app: typer.Typer) -> None:
    command(app, "config")(config)


@handle_errors
def config(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON: {section: {setting: {value, source, env}}}."),
) -> None:
    """Show every effective setting, its environment variable and where its value came from.

    Sources, highest precedence first: flag > environment > .env (workdir, then train/.env)
    > config file (xttsft.toml or --config) > default. Invalid values are all reported at once.

    Example: `TRAIN_NUM_EPOCHS=7 xttsft config --json`
    """
    from xttsft.settings import SECTIONS, load_settings

    st = state(ctx)
    settings, provenance = load_settings(Workspace(st.workdir), config_file=st.config_file)
    data = settings.to_dict()
    resolved = _resolved_autos(settings)
    if as_json:
        out = {
            section: {
                name: {
                    "value": value,
                    "source": provenance[section][name].kind,
                    "detail": provenance[section][name].detail,
                    "env": SECTIONS[section].env_name(name),
                    **({"resolved": resolved[section, name]} if (section, name) in resolved else {}),
                }
                for name, value in values.items()
            }
            for section, values in data.items()
        }
        # plain print: JSON must not be wrapped or coloured
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    for section, values in data.items():
        table = Table(title=f"[bold]{section}[/]", title_justify="left", show_lines=False, expand=False)
        # names and variables stay whole at 80 columns (they are what a user copies); values fold
        names = [(name, SECTIONS[section].env_name(name)) for name in values]
        table.add_column("setting", no_wrap=True, min_width=max(len(n) for n, _ in names))
        table.add_column("value", overflow="fold")
        table.add_column("environment variable", style="dim", no_wrap=True, min_width=max(len(e) for _, e in names))
        table.add_column("source", overflow="fold")
        for name, value in values.items():
            src = provenance[section][name]
            style = "dim" if src.kind == "default" else "bold green"
            shown = f"{value} ({resolved[section, name]} here)" if (section, name) in resolved else str(value)
            table.add_row(name, shown, SECTIONS[section].env_name(name), f"[{style}]{src}[/]")
        console.print(table)


def _resolved_autos(settings: Settings) -> dict[tuple[str, str], str]:
    """What an ``auto`` Whisper model stands for on this machine, as ``xttsft transcribe`` resolves it
    (doctor's pick for the device used), so `config` and `doctor` tell the same story."""
    if settings.transcribe.model != "auto":
        return {}

    hw = hardware_facts()
    device = settings.transcribe.device if settings.transcribe.device != "auto" else recommend(hw).whisper_device
    return {("transcribe", "model"): whisper_model_for(hw, device)[0]}
