"""Command-line interface: one small typer module per subcommand over the library."""
