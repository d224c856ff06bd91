"""``dnupdate data``: list, fetch, verify and describe datasets.

The engine (and NumPy) are imported inside each command, so ``dnupdate --help`` stays light.
Download progress arrives as engine events and is drawn here with a Rich progress bar on stderr.
"""

from __future__ import annotations

import json
import sys

import typer

from dnupdate.cli.common import (
    EXIT_BAD_INPUT,
    busy,
    data_dir_option,
    data_status,
    fail,
    json_option,
    stderr_console,
    stdout_console,
)
from dnupdate.cli.help_format import HelpCommand, HelpGroup, help_text

DATA_HELP = help_text(
    "Datasets: list the known ones, fetch them into the cache, verify checksums, describe one.",
    "Data directory: --data-dir, else $DNUPDATE_DATA_DIR, else the user cache folder.",
    examples=(
        "dnupdate data list",
        "dnupdate data info mnist --data-dir ../shared/data/mnist",
        "dnupdate data verify cifar10 --data-dir ~/datasets",
        "dnupdate data fetch fashion-mnist",
    ),
)
LIST_HELP = help_text(
    "List the named datasets and whether each is on this machine.",
    examples=("dnupdate data list", "dnupdate data list --data-dir ../shared/data --json"),
)
FETCH_HELP = help_text(
    "Download a dataset into the data directory, verifying every file's checksum.",
    examples=(
        "dnupdate data fetch fashion-mnist",
        """dnupdate data fetch mnist --data-dir ~/datasets \\
          --mirror https://example.org/mnist/""",
    ),
)
VERIFY_HELP = help_text(
    "Check a dataset's files against their published checksums (exit 1 on any problem).",
    examples=(
        "dnupdate data verify cifar10 --data-dir ~/datasets",
        "dnupdate data verify mnist --data-dir ../shared/data",
    ),
)
INFO_HELP = help_text(
    "Open a dataset and report its counts, image shape, label histogram and files.",
    examples=(
        "dnupdate data info mnist --data-dir ../shared/data/mnist",
        "dnupdate data info synthetic-digits --split test --size 1000 --json",
        "dnupdate data info npz:batch.npz",
    ),
)
DATA_DIR_HELP = (
    "Folder with the dataset files, searched first; fetch writes here (default: "
    "$DNUPDATE_DATA_DIR, else the user cache folder)."
)
NAME_HELP = "Dataset name (see dnupdate data list)."

data_app = typer.Typer(name="data", help=DATA_HELP, no_args_is_help=True, cls=HelpGroup)


def _data_error(exc: Exception) -> None:
    """Report a DataError (which names the file and the problem) and exit with code 1."""
    fail(str(exc), EXIT_BAD_INPUT)


@data_app.command("list", help=LIST_HELP, cls=HelpCommand)
def list_datasets(
    data_dir: str | None = data_dir_option(DATA_DIR_HELP),
    as_json: bool = json_option("One JSON object per dataset on stdout."),
) -> None:
    """List the named datasets and whether each is on this machine."""
    from dnupdate.engine.data import CATALOG
    from dnupdate.engine.data.locate import cache_root
    from dnupdate.engine.data.named import locate_split

    rows = []
    for entry in CATALOG.values():
        if entry.synthetic:
            status = "built in (SYNTHETIC, generated on demand)"
        else:
            found = [locate_split(entry, s, data_dir) for s in ("train", "test")]
            present = [f for f in found if f is not None]
            status = f"present: {present[0].folder}" if present else "not on this machine"
            if len(present) == 1:
                status += " (one split only)"
        rows.append((entry, status))
    if as_json:
        for entry, status in rows:
            record = {
                "name": entry.name,
                "title": entry.title,
                "synthetic": entry.synthetic,
                "shape": list(entry.shape),
                "classes": entry.classes,
                "train": entry.counts["train"],
                "test": entry.counts["test"],
                "status": status,
            }
            print(json.dumps(record))
        return
    from rich.table import Table

    table = Table(title=f"Datasets (cache: {cache_root()})")
    table.add_column("name", no_wrap=True)
    for column in ("what", "C×H×W", "classes", "train/test", "status"):
        table.add_column(column)
    for entry, status in rows:
        c, h, w = entry.shape
        table.add_row(
            entry.name,
            entry.title,
            f"{c}×{h}×{w}",
            str(entry.classes),
            f"{entry.counts['train']}/{entry.counts['test']}",
            status,
        )
    stdout_console().print(table)


class _ProgressSink:
    """Turns the engine's download events into a Rich progress bar (on stderr)."""

    def __init__(self, progress, console):
        self.progress = progress
        self.console = console
        self.tasks: dict[str, int] = {}

    def __call__(self, event) -> None:
        from dnupdate.engine.data.download import (
            DownloadProgress,
            DownloadStarted,
            FileReady,
            MirrorFailed,
        )

        if isinstance(event, DownloadStarted):
            if event.filename in self.tasks:
                self.progress.reset(self.tasks[event.filename], total=event.total)
            else:
                self.tasks[event.filename] = self.progress.add_task(
                    event.filename, total=event.total
                )
        elif isinstance(event, DownloadProgress):
            self.progress.update(self.tasks[event.filename], completed=event.done)
        elif isinstance(event, MirrorFailed):
            self.console.print(  # soft wrap: a URL is never broken across lines
                f"[yellow]{event.url}: {event.reason}; trying the next mirror", soft_wrap=True
            )
        elif isinstance(event, FileReady):
            how = "already present and verified" if event.cached else "downloaded and verified"
            self.console.print(f"{event.filename}: {how}")


@data_app.command("fetch", help=FETCH_HELP, cls=HelpCommand)
def fetch(
    name: str = typer.Argument(..., metavar="NAME", help=NAME_HELP),
    data_dir: str | None = data_dir_option(DATA_DIR_HELP),
    mirror: list[str] = typer.Option(
        [],
        "--mirror",
        metavar="URL",
        help="Base URL tried before the canonical mirrors (repeatable).",
    ),
    timeout: float = typer.Option(
        30.0, "--timeout", metavar="SECONDS", help="Seconds before a stalled mirror fails."
    ),
) -> None:
    """Download a dataset into the data directory, verifying every file's checksum."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from dnupdate.engine.data import DataError, fetch_dataset

    console = stderr_console()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            folder = fetch_dataset(
                name,
                data_dir,
                mirrors=mirror,
                on_event=_ProgressSink(progress, console),
                timeout=timeout,
            )
    except DataError as exc:
        _data_error(exc)
    print(folder)


@data_app.command("verify", help=VERIFY_HELP, cls=HelpCommand)
def verify(
    name: str = typer.Argument(..., metavar="NAME", help=NAME_HELP),
    data_dir: str | None = data_dir_option(DATA_DIR_HELP),
) -> None:
    """Check a dataset's files against their published checksums (exit 1 on any problem)."""
    from dnupdate.engine.data import DataError, verify_dataset

    try:
        checks = verify_dataset(name, data_dir)
    except DataError as exc:
        _data_error(exc)
    if not checks:
        print(f"{name}: built in (SYNTHETIC, generated on demand): nothing to verify")
        return
    bad = 0
    for check in checks:
        print(f"{check.status:9} {check.path}: {check.detail}")
        bad += check.status in ("mismatch", "missing")
    if bad:
        fail(f"{name}: {bad} file(s) missing or corrupt; run: dnupdate data fetch {name}")


def _split_record(dataset) -> dict:
    """A JSON-ready summary of one opened split."""
    import numpy as np

    histogram = dataset.label_histogram()
    storage = "memory-mapped" if isinstance(dataset.images, np.memmap) else "in memory"
    if dataset.images.base is not None and isinstance(dataset.images.base, np.memmap):
        storage = "memory-mapped"
    return {
        "name": dataset.name,
        "split": dataset.split,
        "synthetic": dataset.synthetic,
        "count": len(dataset),
        "shape": list(dataset.shape),
        "dtype": str(dataset.images.dtype),
        "storage": storage,
        "classes": dataset.classes,
        "label_histogram": [int(v) for v in histogram],
        "label_names": list(dataset.label_names),
        "description": dataset.description,
        "files": dataset.path,
        "notes": list(dataset.notes),
    }


def _print_split(record: dict) -> None:
    console = stdout_console()
    tag = "  [bold red]SYNTHETIC[/]" if record["synthetic"] else ""
    c, h, w = record["shape"]
    console.print(f"[bold]{record['name']}[/] {record['split']}{tag}: {record['description']}")
    console.print(
        f"  images: {record['count']} × {c}×{h}×{w} {record['dtype']} ({record['storage']}); "
        f"classes: {record['classes']}"
    )
    console.print(f"  files: {record['files']}", soft_wrap=True)
    names = record["label_names"]
    pairs = []
    for label, count in enumerate(record["label_histogram"]):
        named = label < len(names) and names[label] != str(label) and len(names) <= 20
        pairs.append(f"{label} ({names[label]}):{count}" if named else f"{label}:{count}")
    console.print("  labels: " + ", ".join(pairs), soft_wrap=True)
    for note in record["notes"]:
        console.print(f"  [yellow]note:[/] {note}")


@data_app.command("info", help=INFO_HELP, cls=HelpCommand)
def info(
    name: str = typer.Argument(
        ..., metavar="NAME", help="Dataset name, npz:FILE, .npz file or LMDB folder."
    ),
    data_dir: str | None = data_dir_option(DATA_DIR_HELP),
    split: str = typer.Option("all", "--split", metavar="train|test|all", help="Split(s) to open."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Generator seed (synthetic sets)."),
    size: int | None = typer.Option(
        None, "--size", metavar="N", help="Image count (synthetic sets)."
    ),
    as_json: bool = json_option("One JSON object per split on stdout."),
) -> None:
    """Open a dataset and report its counts, image shape, label histogram and files."""
    from dnupdate.engine.data import CATALOG, DataError, open_dataset, resolve_source

    try:
        single = resolve_source(name, "train", data_dir) not in CATALOG
    except DataError as exc:
        _data_error(exc)
    splits = ("train",) if single else ("train", "test") if split == "all" else (split,)
    records, errors = [], []
    console = stderr_console()
    for one in splits:
        try:
            with busy(console, data_status(name, one, data_dir)):
                dataset = open_dataset(name, one, data_dir, seed=seed, size=size)
            records.append(_split_record(dataset))
        except DataError as exc:
            errors.append(str(exc))
    for record in records:
        if as_json:
            print(json.dumps(record))
        else:
            _print_split(record)
    for error in errors:
        print(f"dnupdate: error: {error}", file=sys.stderr)
    if errors:
        raise typer.Exit(EXIT_BAD_INPUT)
