"""The disk cache of generated synthetic sets (engine/data/synthetic_cache.py)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnupdate.engine.data import synthetic_cache
from dnupdate.engine.data.named import _synthetic, load_synthetic
from dnupdate.engine.data.synthetic_digits import GENERATOR_VERSION, generate_digits

SHAPE = (1, 4, 4)


def small_set(count=6, fill=7):
    images = np.full((count, *SHAPE), fill, dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(count, dtype=np.uint8)
    return images, np.arange(count, dtype=np.int64) % 10


class Counting:
    """A generator that counts its calls."""

    def __init__(self, made):
        self.made = made
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.made


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("DNUPDATE_DATA_DIR", str(tmp_path / "cache"))
    _synthetic.cache_clear()
    yield tmp_path / "cache"
    _synthetic.cache_clear()


def fetch(generate, count=6, version=1, seed=3):
    return synthetic_cache.cached_generate("toy", version, "train", seed, count, SHAPE, generate)


def test_generated_once_then_read_back():
    generate = Counting(small_set())
    first = fetch(generate)
    second = fetch(generate)
    assert generate.calls == 1
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert synthetic_cache.cache_path("toy", 1, "train", 3, 6).is_file()


def test_every_part_of_the_key_names_its_own_file():
    paths = {
        synthetic_cache.cache_path("toy", 1, "train", 3, 6),
        synthetic_cache.cache_path("toy", 2, "train", 3, 6),
        synthetic_cache.cache_path("toy", 1, "test", 3, 6),
        synthetic_cache.cache_path("toy", 1, "train", 4, 6),
        synthetic_cache.cache_path("toy", 1, "train", 3, 7),
        synthetic_cache.cache_path("other", 1, "train", 3, 6),
    }
    assert len(paths) == 6
    generate = Counting(small_set())
    fetch(generate, version=1)
    fetch(generate, version=2)  # a new generator version never reads the old file
    assert generate.calls == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: b"",  # empty
        lambda data: b"not a zip file at all",
    ],
)
def test_a_damaged_file_is_regenerated_and_rewritten(damage):
    generate = Counting(small_set())
    fetch(generate)
    path = synthetic_cache.cache_path("toy", 1, "train", 3, 6)
    path.write_bytes(damage(path.read_bytes()))
    images, _ = fetch(generate)
    assert generate.calls == 2
    np.testing.assert_array_equal(images, small_set()[0])
    fetch(generate)
    assert generate.calls == 2  # rewritten whole


def test_a_file_of_another_set_or_with_a_wrong_digest_is_not_used():
    path = synthetic_cache.cache_path("toy", 1, "train", 3, 6)
    path.parent.mkdir(parents=True)
    images, labels = small_set()
    np.savez(path, images=images, labels=labels, sha256=np.array("0" * 64))
    generate = Counting(small_set(fill=9))
    assert fetch(generate)[0][0, 0, 1, 1] == 9 and generate.calls == 1
    wrong = small_set(count=5)
    np.savez(
        path, images=wrong[0], labels=wrong[1], sha256=np.array(synthetic_cache.digest(*wrong))
    )
    assert fetch(generate)[0].shape == (6, *SHAPE) and generate.calls == 2


def test_an_unwritable_cache_leaves_the_set_generated(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DNUPDATE_DATA_DIR", str(blocker / "cache"))
    generate = Counting(small_set())
    assert fetch(generate)[0].shape == (6, *SHAPE)
    assert fetch(generate)[0].shape == (6, *SHAPE)
    assert generate.calls == 2


def test_load_synthetic_gives_the_generator_s_images_first_and_second_time(cache_in_tmp):
    expected = generate_digits(40, 5, "test")
    first = load_synthetic("synthetic-digits", "test", 5, 40)
    _synthetic.cache_clear()  # the next call reads the disk cache, as a new process would
    second = load_synthetic("synthetic-digits", "test", 5, 40)
    for dataset in (first, second):
        np.testing.assert_array_equal(dataset.images, expected[0])
        np.testing.assert_array_equal(dataset.labels, expected[1])
    name = f"synthetic-digits-v{GENERATOR_VERSION}-test-seed5-n40.npz"
    assert (cache_in_tmp / "synthetic" / name).is_file()


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzz_any_damage_gives_the_true_set(data):
    generate = Counting(small_set())
    fetch(generate)
    path = synthetic_cache.cache_path("toy", 1, "train", 3, 6)
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] ^= data.draw(st.integers(1, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path.write_bytes(bytes(raw))
    images, labels = fetch(generate)
    np.testing.assert_array_equal(images, small_set()[0])
    np.testing.assert_array_equal(labels, small_set()[1])
