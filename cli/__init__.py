"""dnupdate's command-line interface (Typer + Rich). Only this package imports them."""

__version__ = "0.1.0"
