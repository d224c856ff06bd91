"""Imports each command module so that its ``@app.command`` decorators run.

Each module below defines its commands on ``cli.main.app``.
"""

from cli import (
    bench_cmd,  # noqa: F401
    data_cmd,  # noqa: F401
    devices_cmd,  # noqa: F401
    inspect_cmd,  # noqa: F401
    lr_schedule_cmd,  # noqa: F401
    plot_cmd,  # noqa: F401
    train_cmd,  # noqa: F401
)
