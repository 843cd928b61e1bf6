"""Built-in shapes (deterministic, held-out combinations, captions that match the picture) and the image readers."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from tunelab.data.builtin_shapes import COLORS, HELD_OUT, IMAGE_SIZE, SHAPES, shape_captions, zero_shot_labels
from tunelab.data.images import (decode_images, load_image, read_image_captions, read_image_folder,
                                 write_builtin)
from tunelab.errors import UserError

pytestmark = pytest.mark.unit

SIZES = {"train": 3000, "eval": 300, "shifted_train": 1000, "shifted_eval": 200}


@pytest.fixture(scope="module")
def splits():
    return {split: shape_captions(split) for split in SIZES}


def pixel_hash(records):
    digest = hashlib.sha256()
    for r in records:
        digest.update(r["image"].tobytes())
        digest.update(r["caption"].encode())
    return digest.hexdigest()


def test_splits_are_deterministic_and_sized(splits):
    for split, count in SIZES.items():
        assert len(splits[split]) == count
    assert pixel_hash(shape_captions("eval")) == pixel_hash(splits["eval"])
    assert pixel_hash(splits["eval"]) != pixel_hash(splits["train"][:300])
    image = splits["train"][0]["image"]
    assert image.mode == "RGB" and image.size == (IMAGE_SIZE, IMAGE_SIZE)


def test_shifted_combinations_are_never_in_train(splits):
    def combos(split):
        return {(r["color"], r["shape"]) for r in splits[split]}

    assert combos("train") == combos("eval") and combos("shifted_train") == combos("shifted_eval") == HELD_OUT
    assert not combos("train") & combos("shifted_train")
    assert len(combos("train")) + len(HELD_OUT) == len(COLORS) * len(SHAPES)
    # every color and every shape still appears in train, only not in the held-out pairs
    assert {c for c, _ in combos("train")} == set(COLORS) and {s for _, s in combos("train")} == set(SHAPES)
    assert set(zero_shot_labels("train")) == {r["label"] for r in splits["train"]}
    assert set(zero_shot_labels("shifted_eval")) == {r["label"] for r in splits["shifted_eval"]}
    assert not set(zero_shot_labels("train")) & set(zero_shot_labels("shifted_train"))


def test_captions_name_the_color_shape_size_and_position(splits):
    words = {"left": "left", "right": "right", "top": "top", "bottom": "bottom", "center": "center"}
    for split in SIZES:
        for r in splits[split]:
            caption = r["caption"].lower()
            assert r["label"] == f"{r['color']} {r['shape']}" and r["label"] in caption
            assert r["size"] in caption and words[r["position"]] in caption


def test_the_shape_is_drawn_in_its_color_and_place(splits):
    for r in splits["eval"][:50]:
        pixels = np.asarray(r["image"]).astype(int)
        distance = np.abs(pixels - np.array(COLORS[r["color"]])).sum(axis=2)
        ys, xs = np.nonzero(distance < 60)
        assert len(xs) > 20
        cx, cy = xs.mean(), ys.mean()
        if r["position"] == "left":
            assert cx < IMAGE_SIZE / 2 - 3
        if r["position"] == "top":
            assert cy < IMAGE_SIZE / 2 - 3


def write_png(path, color=(255, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def test_missing_image_column_names_the_line(tmp_path):
    write_png(tmp_path / "a.png")
    data = tmp_path / "captions.jsonl"
    data.write_text(json.dumps({"image": "a.png", "caption": "red"}) + "\n" + json.dumps({"caption": "x"}) + "\n")
    with pytest.raises(UserError, match=r"captions\.jsonl:2: record has no 'image' field"):
        read_image_captions(data)
    csv = tmp_path / "captions.csv"
    csv.write_text("path,caption\na.png,red\n")
    with pytest.raises(UserError, match=r"captions\.csv:1: the header has no 'image' column"):
        read_image_captions(csv)


def test_missing_image_file_and_empty_caption_name_the_line(tmp_path):
    write_png(tmp_path / "imgs" / "a.png")
    data = tmp_path / "captions.csv"
    data.write_text("image,caption\nimgs/a.png,a red square\nimgs/b.png,a blue square\n")
    with pytest.raises(UserError, match=r"captions\.csv:3: image file not found: .*b\.png"):
        read_image_captions(data)
    data.write_text("image,caption\nimgs/a.png,a red square\nimgs/a.png,  \n")
    with pytest.raises(UserError, match=r"captions\.csv:3: empty caption"):
        read_image_captions(data)


def test_captions_resolve_relative_to_the_data_file(tmp_path):
    png = write_png(tmp_path / "imgs" / "a.png")
    data = tmp_path / "captions.jsonl"
    data.write_text("\n" + json.dumps({"image": "imgs/a.png", "caption": "a red square", "id": 7}) + "\n")
    records = read_image_captions(data)
    assert records.rows == [{"image": str(png.resolve()), "caption": "a red square", "id": 7}]
    assert records.where(0) == f"{data}:2"


def test_folder_needs_two_classes(tmp_path):
    write_png(tmp_path / "cats" / "1.png")
    with pytest.raises(UserError, match=r"found 1 class folder\(s\).*zero-shot evaluation needs at least two classes"):
        read_image_folder(tmp_path)
    write_png(tmp_path / "dogs" / "1.JPG")
    write_png(tmp_path / "dogs" / ".hidden.png")
    (tmp_path / "notes.txt").write_text("not a class")
    records = read_image_folder(tmp_path)
    assert [r["label"] for r in records.rows] == ["cats", "dogs"]


def test_corrupt_image_fails_or_is_skipped(tmp_path):
    good = write_png(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really an image")
    with pytest.raises(UserError, match=r"bad\.png: cannot decode the image"):
        load_image(bad, "fail")
    assert load_image(bad, "skip") is None
    assert load_image(good).size == (8, 8)
    data = tmp_path / "captions.jsonl"
    data.write_text("".join(json.dumps({"image": p, "caption": "c"}) + "\n" for p in ("good.png", "bad.png")))
    records = read_image_captions(data)  # readers only check that files exist
    with pytest.raises(UserError, match=r"captions\.jsonl:2: image .*bad\.png: cannot decode"):
        decode_images(records, "fail")
    images, kept, skipped = decode_images(records, "skip")
    assert len(images) == len(kept) == 1 and skipped == 1 and kept[0]["image"].endswith("good.png")


def test_write_builtin_round_trips_through_the_readers(tmp_path):
    originals = shape_captions("shifted_eval")[:40]
    captions = read_image_captions(write_builtin("shifted_eval", tmp_path / "c", "captions", limit=40))
    assert [r["caption"] for r in captions.rows] == [r["caption"] for r in originals]
    images, _, skipped = decode_images(captions)
    assert skipped == 0 and [i.tobytes() for i in images] == [r["image"].tobytes() for r in originals]
    folder = read_image_folder(write_builtin("shifted_eval", tmp_path / "f", "folder", limit=40))
    assert sorted(r["label"] for r in folder.rows) == sorted(r["label"] for r in originals)
    assert {r["label"] for r in folder.rows} <= set(zero_shot_labels("shifted_eval"))
