"""The Typer command tree: one module per command; parse, call the engine, render, exit code."""
