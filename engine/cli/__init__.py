"""Subcommands of `python -m engine`; each module defines `register(subparsers)`."""
