"""Command groups whose help lists commands in a chosen order, never cutting a description.

Click shortens each command's description to fit one line and ends it with
"..." mid-sentence; here the whole short help is kept and wrapped instead.
Commands appear in the order they were added (first steps first), not A to Z.
"""

from __future__ import annotations

import click


class HelpGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, command.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
