"""The `hilt` command line: thin typer commands that call one package function each."""
