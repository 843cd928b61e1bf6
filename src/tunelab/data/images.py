"""Read a user's image data for CLIP recipes: image-caption files and image folders, decoded lazily.

Two layouts on disk:
- captions: a .jsonl or .csv file with columns `image` (a path relative to the data file's folder, or
  absolute) and `caption`, one picture per line. Read by `read_image_captions`, which checks every line
  up front and reports a mistake as `file:line` (JSONL and CSV go through `readers.read_records`, which
  keeps the line numbers).
- folder: one subfolder per class, images inside (for zero-shot classification); the folder name is
  the label. Read by `read_image_folder`.
Readers only check paths; pixels are decoded later, one file at a time, by `load_image` /
`decode_images`, where a corrupt file either stops the run (on_error "fail") or is left out and
counted (on_error "skip"). `write_builtin` writes a built-in split in either layout, to show them.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from tunelab.data.builtin_shapes import shape_captions
from tunelab.data.readers import Records, read_records
from tunelab.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CAPTION_SUFFIXES = (".jsonl", ".csv")
ON_ERROR = ("fail", "skip")
LAYOUTS = ("folder", "captions")


def read_image_captions(path: str | Path) -> Records:
    """Rows `{"image": absolute path (str), "caption": str, ...other columns kept}`, with their lines."""
    path = Path(path)
    if path.suffix not in CAPTION_SUFFIXES:
        raise UserError(f"{path}: unsupported file type {path.suffix!r} for image captions "
                        f"(use .jsonl or .csv with columns 'image' and 'caption')")
    records = read_records(str(path))
    base = path.resolve().parent
    check_csv_header(path, records, ("image", "caption"), "'image', a path relative to the data file, and 'caption'")
    rows = []
    for i, row in enumerate(records.rows):
        where = records.where(i)
        for key in ("image", "caption"):
            if row.get(key) is None:
                raise UserError(f"{where}: record has no {key!r} field (expected 'image', a path relative to "
                                f"the data file, and 'caption')")
            if not isinstance(row[key], str):
                raise UserError(f"{where}: field {key!r} should be a string, got {type(row[key]).__name__}")
        if not row["caption"].strip():
            raise UserError(f"{where}: empty caption (expected a text that describes the image)")
        if not row["image"].strip():
            raise UserError(f"{where}: empty 'image' field (expected a path relative to the data file)")
        image = base / row["image"]
        if not image.is_file():
            raise UserError(f"{where}: image file not found: {image} (image paths are relative to {base})")
        rows.append({**row, "image": str(image)})
    return Records(rows, records.source, records.lines)


def read_image_folder(root: str | Path) -> Records:
    """Rows `{"image": path (str), "label": folder name}`, classes in name order, files in path order.
    Images may sit in nested folders inside a class folder; hidden files and folders are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: image folder not found (expected a folder with one subfolder per class)")
    rows = []
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in classes:
        images = sorted(p for p in folder.rglob("*") if _is_image(p, folder))
        if not images:
            raise UserError(f"{folder}: class folder with no images (expected {', '.join(IMAGE_SUFFIXES)} files)")
        rows += [{"image": str(p), "label": folder.name} for p in images]
    if len(classes) < 2:
        loose = sum(1 for p in root.iterdir() if _is_image(p, root))
        hint = f"; {loose} images lie directly in it, put them in class subfolders" if loose else ""
        raise UserError(f"{root}: found {len(classes)} class folder(s){hint} (zero-shot evaluation needs at least "
                        f"two classes: one subfolder per class, images inside)")
    return Records(rows, str(root), [None] * len(rows))


def check_csv_header(path: Path, records: Records, wanted: tuple[str, ...], expected: str) -> None:
    """A column missing from a CSV's header is one mistake: say so once, at line 1, not on every record."""
    if path.suffix != ".csv":
        return
    missing = [c for c in wanted if c not in records.rows[0]]
    if missing:
        found = ", ".join(repr(k) for k in records.rows[0] if k is not None) or "none"
        raise UserError(f"{path}:1: the header has no {missing[0]!r} column (found {found}; expected {expected})")


def read_builtin(spec: str, fmt: str, choices: str) -> Records:
    """A built-in set that must be in format `fmt`; the error lists the built-in sets that are (`choices`)."""
    records = read_records(spec)
    if records.implied_format != fmt:
        raise UserError(f"{spec}: this built-in set is in the {records.implied_format!r} format, not {fmt} (the "
                        f"built-in {fmt} sets are {choices})")
    return records


def read_pairs(spec: str, caption_template: str = "a photo of a {}.") -> Records:
    """Image-caption pairs from any of the three sources a CLIP recipe's `data.train`/`data.eval` may name:
    builtin:NAME (pictures in memory), an image folder (captions from `caption_template` and the class
    name), or a .jsonl/.csv captions file."""
    if spec.startswith("builtin:"):
        return read_builtin(spec, "image_caption", "builtin:shapes_train, shapes_eval, shapes_shifted_train, "
                                                   "shapes_shifted_eval")
    if Path(spec).is_dir():
        records = read_image_folder(spec)
        for row in records.rows:
            row["caption"] = caption_template.format(row["label"])
        return records
    return read_image_captions(spec)


def read_labelled(spec: str) -> Records:
    """Labelled images for zero-shot classification: an image folder, builtin:NAME, or a captions file whose
    records also have a 'label'. At least two classes."""
    records = read_pairs(spec)
    for i, row in enumerate(records.rows):
        if not isinstance(row.get("label"), str) or not row["label"].strip():
            raise UserError(f"{records.where(i)}: record has no 'label' field (zero-shot evaluation needs each "
                            f"image's class name; or give an image folder with one subfolder per class)")
    classes = {row["label"] for row in records.rows}
    if len(classes) < 2:
        raise UserError(f"{spec}: {len(classes)} class ({', '.join(classes)}); zero-shot evaluation needs at least two")
    return records


def _is_image(path: Path, under: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(under).parts)
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not hidden


def load_image(path: str | Path, on_error: str = "fail", where: str | None = None) -> Image.Image | None:
    """Decode one image as RGB (transparent parts on white). A file that cannot be read raises a
    UserError naming it (on_error "fail") or gives None (on_error "skip"; the caller counts skips).
    `where` (`file:line` of the record) goes in front of the message when given."""
    if on_error not in ON_ERROR:
        raise UserError(f"on_error = {on_error!r} should be one of {', '.join(ON_ERROR)}")
    try:
        with Image.open(path) as image:
            image.load()
            return _to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # OSError covers unreadable, truncated and unidentified files; SyntaxError and ValueError come
        # from some of Pillow's format plugins on malformed headers.
        if on_error == "skip":
            return None
        reason = "file not found" if isinstance(e, FileNotFoundError) else f"{type(e).__name__}: {e}"
        prefix = f"{where}: image {path}" if where else str(path)
        raise UserError(f"{prefix}: cannot decode the image ({reason}) (expected a readable "
                        f"PNG, JPEG, BMP or WebP file; on_error: skip leaves such files out)") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def decode_images(records: Records | list[dict], on_error: str = "fail",
                  key: str = "image") -> tuple[list[Image.Image], list[dict], int]:
    """Decode `record[key]` of each record (a path, or a PIL image as the built-in sets give).
    Returns (images, the records kept, in the same order, how many were skipped)."""
    rows = records.rows if isinstance(records, Records) else records
    images, kept, skipped = [], [], 0
    for i, row in enumerate(rows):
        value = row[key]
        if isinstance(value, Image.Image):
            image = _to_rgb(value)
        else:
            where = records.where(i) if isinstance(records, Records) and records.lines[i] else None
            image = load_image(value, on_error, where)
        if image is None:
            skipped += 1
            continue
        images.append(image)
        kept.append(row)
    return images, kept, skipped


def write_builtin(split: str, out_dir: str | Path, layout: str = "captions", limit: int | None = None) -> Path:
    """Write a built-in shapes split (see `builtin_shapes`) to disk; returns what a reader takes.
    layout "captions": `out_dir/captions.jsonl` ({"image": "images/00000.png", "caption", "label"} per
    line) and the PNG files under `out_dir/images/`; returns the .jsonl path.
    layout "folder": `out_dir/<label>/00000.png`, one folder per class; returns `out_dir`.
    `limit` writes only the first records (the classes are shuffled, so a few hundred cover them all)."""
    if layout not in LAYOUTS:
        raise UserError(f"layout = {layout!r} should be one of {', '.join(LAYOUTS)}")
    out = Path(out_dir)
    records = shape_captions(split)[:limit]
    if layout == "folder":
        for i, r in enumerate(records):
            (out / r["label"]).mkdir(parents=True, exist_ok=True)
            r["image"].save(out / r["label"] / f"{i:05d}.png")
        return out
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, r in enumerate(records):
        name = f"images/{i:05d}.png"
        r["image"].save(out / name)
        lines.append(json.dumps({"image": name, "caption": r["caption"], "label": r["label"]}) + "\n")
    target = out / "captions.jsonl"
    target.write_text("".join(lines), encoding="utf-8")
    return target


LABEL_SUFFIXES = (".jsonl", ".csv")


def read_image_labels(spec: str, need_labels: bool = True) -> Records:
    """Labelled images for the ViT recipes (format image_label) from builtin:NAME, an image folder (one subfolder
    per class, the folder name is the label) or a .jsonl/.csv file with columns `image` (a path relative to the
    data file's folder, or absolute) and `label` (a class name; a whole number is read as its name, "3").
    Without `need_labels` (MAE and DINO training read pictures only) a file's records may leave the label out."""
    if spec.startswith("builtin:"):
        return read_builtin(spec, "image_label", "builtin:shapes_classes_train, shapes_classes_eval, shapes_pictures")
    if Path(spec).is_dir():
        return read_image_folder(spec)
    path = Path(spec)
    if path.suffix not in LABEL_SUFFIXES:
        raise UserError(f"{spec}: unsupported data for image_label {path.suffix!r} (use an image folder with one "
                        f"subfolder per class, or a .jsonl/.csv file with columns 'image' and 'label')")
    records = read_records(spec)
    base = path.resolve().parent
    wanted = ("image", "label") if need_labels else ("image",)
    check_csv_header(path, records, wanted, "'image', a path relative to the data file, and 'label', the class name")
    rows = []
    for i, row in enumerate(records.rows):
        where = records.where(i)
        image, label = row.get("image"), row.get("label")
        if not isinstance(image, str) or not image.strip():
            raise UserError(f"{where}: record has no 'image' path (expected 'image', a path relative to the data "
                            f"file, and 'label', the class name)")
        if isinstance(label, int) and not isinstance(label, bool):
            label = str(label)
        if (label is not None or need_labels) and (not isinstance(label, str) or not label.strip()):
            raise UserError(f"{where}: record has no 'label' (expected the class name as a string, e.g. "
                            f"\"label\": \"cat\")")
        if not (base / image).is_file():
            raise UserError(f"{where}: image file not found: {base / image} (image paths are relative to {base})")
        rows.append({**row, "image": str(base / image), "label": label})
    return Records(rows, records.source, records.lines)
