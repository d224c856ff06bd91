"""The named datasets: where their files come from, what they are called, their checksums.

Checksums are the published values (MNIST and Fashion-MNIST: the md5s torchvision checks and the
MNIST home page's files; CIFAR: the archives' md5s from the CIFAR page, torchvision's per-batch
md5s for the Python version) plus values recorded in ``../shared/data/README.md`` (beside the
repository) for the binary CIFAR-10 batches (md5 of the verified files, and the git blob SHA-1
of the genuine ``test_batch.bin``). A ``.gz`` is also accepted when its *decompressed* bytes have
the published md5 (Debian's ``dataset-fashion-mnist`` ships recompressed files).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
TORONTO = ("https://www.cs.toronto.edu/~kriz/",)

# Checksum = (algorithm, hex digest); algorithms: md5, sha256, gitblob (git blob SHA-1),
# md5-gunzip (md5 of a .gz file's decompressed bytes).
Checksum = tuple[str, str]


@dataclass(frozen=True)
class Download:
    """One file to fetch: its name on the mirrors, its checksums, and, for an archive, the
    folder inside it whose files are extracted (``archive_dir``)."""

    filename: str
    checksums: tuple[Checksum, ...]
    mirrors: tuple[str, ...]
    archive_dir: str = ""


@dataclass(frozen=True)
class CatalogEntry:
    """A named dataset.

    ``kind`` picks the reader (``idx``, ``cifar10``, ``cifar100``, ``synthetic``).
    ``folders``: sub-folders of a data directory searched for the files (``""`` = the data
    directory itself). ``cache_folder``: where ``fetch`` puts the files under the cache root.
    ``files``: split → the file roles and the names each role may have.
    ``checksums``: file name → accepted checksums.
    """

    name: str
    title: str
    kind: str
    shape: tuple[int, int, int]
    classes: int
    counts: dict[str, int]
    label_names: tuple[str, ...] = ()
    folders: tuple[str, ...] = ("",)
    cache_folder: str = ""
    files: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    checksums: dict[str, tuple[Checksum, ...]] = field(default_factory=dict)
    downloads: tuple[Download, ...] = ()
    system_dirs: tuple[str, ...] = ()
    homepage: str = ""
    synthetic: bool = False


def _idx_files(prefix: str, kind: str, dims: str) -> tuple[str, ...]:
    """Accepted names of one IDX file: ``train-images-idx3-ubyte(.gz)`` and the
    ``train-images.idx3-ubyte`` spelling some copies use."""
    base = f"{prefix}-{kind}-{dims}-ubyte"
    return (f"{base}.gz", base, f"{prefix}-{kind}.{dims}-ubyte")


def _idx_layout() -> dict[str, dict[str, tuple[str, ...]]]:
    return {
        "train": {
            "images": _idx_files("train", "images", "idx3"),
            "labels": _idx_files("train", "labels", "idx1"),
        },
        "test": {
            "images": _idx_files("t10k", "images", "idx3"),
            "labels": _idx_files("t10k", "labels", "idx1"),
        },
    }


def _idx_checksums(gz: dict[str, str], raw: dict[str, str]) -> dict[str, tuple[Checksum, ...]]:
    """gz md5 and decompressed md5 per file, under every accepted name."""
    table: dict[str, tuple[Checksum, ...]] = {}
    for base, gz_md5 in gz.items():
        raw_md5 = raw[base]
        table[f"{base}.gz"] = (("md5", gz_md5), ("md5-gunzip", raw_md5))
        table[base] = (("md5", raw_md5),)
        table[base.replace("-idx", ".idx", 1)] = (("md5", raw_md5),)
    return table


MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_GZ_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_RAW_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot",
)  # fmt: skip
CIFAR10_BIN_CHECKSUMS: dict[str, tuple[Checksum, ...]] = {
    "data_batch_1.bin": (("md5", "5dd7e06a14cb22eb9f671a540d1b7c25"),),
    "data_batch_2.bin": (("md5", "5ea93a67294ea407fff1d09f752e9692"),),
    "data_batch_3.bin": (("md5", "942cd6a4bcdd0dd3c604fbe906cb4421"),),
    "data_batch_4.bin": (("md5", "ae636b3ba5c66a11e91e8cb52e771fcb"),),
    "data_batch_5.bin": (("md5", "53f37980c15c3d472c316c40844f3f0d"),),
    "test_batch.bin": (("gitblob", "e3f3b4653f18f27ada1558cabc3352a3ed1b25cc"),),
    "batches.meta.txt": (("md5", "728051cd483f366e254dddb25bead8b3"),),
    "test_batch_first1000.bin": (("md5", "371f65da31ad652f5e24b3699a3e6515"),),
}
CIFAR10_PY_CHECKSUMS: dict[str, tuple[Checksum, ...]] = {
    "data_batch_1": (("md5", "c99cafc152244af753f735de768cd75f"),),
    "data_batch_2": (("md5", "d4bba439e000b95fd0a9bffe97cbabec"),),
    "data_batch_3": (("md5", "54ebc095f3ab1f0389bbae665268c751"),),
    "data_batch_4": (("md5", "634d18415352ddfa80567beed471001a"),),
    "data_batch_5": (("md5", "482c414d41f54cd18b22e5b47cb7c3cb"),),
    "test_batch": (("md5", "40351d587109b95175f43aff81a1287e"),),
    "batches.meta": (("md5", "5ff9c542aee3614f3951f8cda6e48888"),),
}
CIFAR100_PY_CHECKSUMS: dict[str, tuple[Checksum, ...]] = {
    "train": (("md5", "16019d7e3df5f24257cddd939b257f8d"),),
    "test": (("md5", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    "meta": (("md5", "7973b15100ade9c7d40fb424638fde48"),),
}

CIFAR10_FOLDERS = (
    "", "cifar-10-batches-bin", "cifar10", "cifar10/cifar-10-batches-bin", "cifar-10",
    "cifar-10/cifar-10-batches-bin", "cifar-10-batches-py", "cifar10/cifar-10-batches-py",
)  # fmt: skip
CIFAR100_FOLDERS = (
    "", "cifar-100-binary", "cifar100", "cifar100/cifar-100-binary", "cifar-100",
    "cifar-100-python", "cifar100/cifar-100-python",
)  # fmt: skip


def _idx_entry(
    name: str,
    title: str,
    label_names: tuple[str, ...],
    folders: tuple[str, ...],
    gz_md5: dict[str, str],
    raw_md5: dict[str, str],
    mirrors: tuple[str, ...],
    *,
    homepage: str,
    system_dirs: tuple[str, ...] = (),
) -> CatalogEntry:
    """An MNIST-layout dataset: 60000/10000 1×28×28 images in four IDX files, fetched as
    ``.gz`` from ``mirrors``."""
    return CatalogEntry(
        name=name,
        title=title,
        kind="idx",
        shape=(1, 28, 28),
        classes=10,
        counts={"train": 60000, "test": 10000},
        label_names=label_names,
        folders=folders,
        cache_folder=name,
        files=_idx_layout(),
        checksums=_idx_checksums(gz_md5, raw_md5),
        downloads=tuple(
            Download(f"{base}.gz", (("md5", md5),), mirrors) for base, md5 in gz_md5.items()
        ),
        system_dirs=system_dirs,
        homepage=homepage,
    )


def _cifar100(name: str, title: str, classes: int) -> CatalogEntry:
    return CatalogEntry(
        name=name,
        title=title,
        kind="cifar100",
        shape=(3, 32, 32),
        classes=classes,
        counts={"train": 50000, "test": 10000},
        folders=CIFAR100_FOLDERS,
        cache_folder="cifar100",
        files={
            "train": {"records": ("train.bin", "train")},
            "test": {"records": ("test.bin", "test")},
        },
        checksums=CIFAR100_PY_CHECKSUMS,
        downloads=(
            Download(
                "cifar-100-binary.tar.gz",
                (("md5", "03b5dce01913d631647c71ecec9e9cb8"),),
                TORONTO,
                archive_dir="cifar-100-binary",
            ),
        ),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    )


CATALOG: dict[str, CatalogEntry] = {
    "mnist": _idx_entry(
        "mnist",
        "MNIST handwritten digits (LeCun, Cortes, Burges)",
        tuple(str(d) for d in range(10)),
        ("", "mnist", "MNIST/raw", "MNIST"),
        MNIST_GZ_MD5,
        MNIST_RAW_MD5,
        MNIST_MIRRORS,
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": _idx_entry(
        "fashion-mnist",
        "Fashion-MNIST clothing images (Zalando Research)",
        FASHION_NAMES,
        ("", "fashion-mnist", "FashionMNIST/raw", "fashion"),
        FASHION_GZ_MD5,
        FASHION_RAW_MD5,
        FASHION_MIRRORS,
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
    "cifar10": CatalogEntry(
        name="cifar10",
        title="CIFAR-10 tiny images (Krizhevsky, Nair, Hinton)",
        kind="cifar10",
        shape=(3, 32, 32),
        classes=10,
        counts={"train": 50000, "test": 10000},
        label_names=CIFAR10_NAMES,
        folders=CIFAR10_FOLDERS,
        cache_folder="cifar10",
        files={
            "train": {"batches": tuple(f"data_batch_{i}.bin" for i in range(1, 6))},
            "test": {"batches": ("test_batch.bin",)},
        },
        checksums={**CIFAR10_BIN_CHECKSUMS, **CIFAR10_PY_CHECKSUMS},
        downloads=(
            Download(
                "cifar-10-binary.tar.gz",
                (("md5", "c32a1d4ab5d03f1284b67883e8d87530"),),
                TORONTO,
                archive_dir="cifar-10-batches-bin",
            ),
        ),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "cifar100": _cifar100("cifar100", "CIFAR-100 tiny images, 100 fine labels", 100),
    "cifar100-coarse": _cifar100("cifar100-coarse", "CIFAR-100 tiny images, 20 coarse labels", 20),
    "synthetic-digits": CatalogEntry(
        name="synthetic-digits",
        title="SYNTHETIC digit-like glyphs, 28×28 grayscale (generated, not MNIST)",
        kind="synthetic",
        shape=(1, 28, 28),
        classes=10,
        counts={"train": 60000, "test": 10000},
        label_names=tuple(str(d) for d in range(10)),
        synthetic=True,
    ),
    "synthetic-shapes": CatalogEntry(
        name="synthetic-shapes",
        title="SYNTHETIC coloured shapes and textures, 32×32 RGB (generated, not CIFAR)",
        kind="synthetic",
        shape=(3, 32, 32),
        classes=10,
        counts={"train": 50000, "test": 10000},
        synthetic=True,
    ),
}

ALIASES = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "cifar100": "cifar100",
    "cifar-100": "cifar100",
    "cifar100-fine": "cifar100",
    "cifar100-coarse": "cifar100-coarse",
    "cifar-100-coarse": "cifar100-coarse",
    "synthetic-digits": "synthetic-digits",
    "synthetic_digits": "synthetic-digits",
    "synthetic-shapes": "synthetic-shapes",
    "synthetic_shapes": "synthetic-shapes",
}


def canonical_name(name: str) -> str | None:
    """The catalog name for ``name`` (case-insensitive, ``_``/``-`` variants), or None."""
    return ALIASES.get(name.strip().lower())


def split_name(split: str) -> str:
    """``train``, or ``test`` for any of test/val/valid/validation."""
    lowered = split.lower()
    if lowered in ("test", "val", "valid", "validation", "eval"):
        return "test"
    if lowered == "train":
        return "train"
    raise ValueError(f"unknown split '{split}' (use train or test)")
