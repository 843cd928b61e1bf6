"""Score and use encoder runs. Classification: accuracy, macro-F1, a per-class report and a confusion matrix
(scikit-learn). Tagging: entity-level precision, recall and F1 (seqeval, conlleval's counting: an entity
is right only if its type and both ends are), plus per-type scores and token accuracy.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from seqeval.metrics import classification_report as entity_report
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix
from sklearn.metrics import f1_score as sk_f1

from tunelab.config import Recipe
from tunelab.data.encoder_inputs import encode, max_length

CONFUSION_PNG = "confusion.png"
# A word for tagging: one CJK character (Chinese data is tagged per character), a run of letters or digits,
# or one punctuation mark (the built-in data and CoNLL files split punctuation off).
_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W\u3400-\u9fff\uf900-\ufaff]+|[^\w\s]")


def split_words(text: str) -> list[str]:
    return _WORD.findall(text)


@torch.no_grad()
def _forward(model, tokenizer, stage: str, batch: dict, limit: int):
    enc = encode(tokenizer, stage, batch, limit)
    inputs = tokenizer.pad(dict(enc), return_tensors="pt").to(next(model.parameters()).device)
    return model(**inputs).logits.float(), enc


def class_probabilities(model, tokenizer, stage: str, records: dict, limit: int, batch_size: int) -> torch.Tensor:
    """(N, num_labels) softmax probabilities for `records` as columns ({"text": [...], "text_pair": [...]})."""
    n, out = len(records["text"]), []
    for start in range(0, n, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in records.items()}
        out.append(_forward(model, tokenizer, stage, batch, limit)[0].softmax(-1))
    return torch.cat(out)


def word_log_probs(model, tokenizer, token_lists: list[list[str]], limit: int,
                   batch_size: int) -> list[list[torch.Tensor | None]]:
    """Per word, the log-probabilities of the tags at its first sub-token (the one training labels), or None
    for a word truncation cut off."""
    out = []
    for start in range(0, len(token_lists), batch_size):
        words = token_lists[start:start + batch_size]
        logits, enc = _forward(model, tokenizer, "tag", {"tokens": words}, limit)
        log_probs = logits.log_softmax(-1)
        for i, sentence in enumerate(words):
            first = {}
            for position, word in enumerate(enc.word_ids(i)):
                if word is not None and word not in first:
                    first[word] = log_probs[i, position]
            out.append([first.get(w) for w in range(len(sentence))])
    return out


def word_tags(model, tokenizer, token_lists: list[list[str]], names: list[str], limit: int,
              batch_size: int) -> list[list[str]]:
    """A tag per word: the prediction at its first sub-token. Words cut off by truncation get O."""
    return _best_tags(word_log_probs(model, tokenizer, token_lists, limit, batch_size), names)


def _best_tags(scores: list[list[torch.Tensor | None]], names: list[str]) -> list[list[str]]:
    return [["O" if lp is None else names[int(lp.argmax())] for lp in sentence] for sentence in scores]


def spans(words: list[str], tags: list[str]) -> list[dict]:
    """Entities as {type, text, start, end} (word indices, end inclusive)."""
    joiner = "" if all(len(w) == 1 for w in words) else " "  # Chinese is tagged per character
    return [{"type": kind, "text": joiner.join(words[s:e + 1]), "start": s, "end": e}
            for kind, s, e in get_entities(tags)]


def _plot_confusion(matrix, names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = 2 + 0.6 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ConfusionMatrixDisplay(matrix, display_labels=names).plot(ax=ax, cmap="Blues", xticks_rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _classification(model, tokenizer, recipe: Recipe, stage: str, names: list[str], ds, out_dir: Path | None,
                    prefix: str) -> dict:
    columns = ["text", "text_pair"] if stage == "pair" else ["text"]
    records = {c: ds[c] for c in columns}
    probs = class_probabilities(model, tokenizer, stage, records, max_length(recipe, model), recipe.eval.batch_size)
    index = {n: i for i, n in enumerate(names)}
    truth, predicted = [index[label] for label in ds["label"]], probs.argmax(-1).tolist()
    ids = list(range(len(names)))
    matrix = confusion_matrix(truth, predicted, labels=ids)
    report = classification_report(truth, predicted, labels=ids, target_names=names, output_dict=True, zero_division=0)
    # The mean cross-entropy of the true classes, the loss the head trained on: it still ranks settings when
    # they all reach accuracy 1 (tunelab sweep --lr-search chooses on it).
    true_probs = probs[torch.arange(len(truth)), torch.tensor(truth, dtype=torch.long)]
    out = {"eval_loss": -true_probs.clamp(min=1e-12).log().mean().item(),
           "accuracy": accuracy_score(truth, predicted),
           "macro_f1": sk_f1(truth, predicted, labels=ids, average="macro", zero_division=0),
           "per_class": {n: {k.replace("-score", ""): v for k, v in report[n].items()} for n in names},
           "confusion_matrix": {"labels": names, "rows_true_cols_predicted": matrix.tolist()}}
    if out_dir is not None:
        _plot_confusion(matrix, names, out_dir / f"{prefix}{CONFUSION_PNG}")
        out["confusion_png"] = f"{prefix}{CONFUSION_PNG}"
    return out


def _tagging(model, tokenizer, recipe: Recipe, names: list[str], ds) -> dict:
    truth = ds["tags"]
    scores = word_log_probs(model, tokenizer, ds["tokens"], max_length(recipe, model), recipe.eval.batch_size)
    predicted = _best_tags(scores, names)
    # The mean cross-entropy of the true tags over the words the model saw, the loss the head trained on: it
    # still ranks settings when entity F1 saturates (tunelab sweep --lr-search chooses on it).
    index = {n: i for i, n in enumerate(names)}
    losses = [-lp[index[t]].item() for ts, sentence in zip(truth, scores) for t, lp in zip(ts, sentence)
              if lp is not None]
    tokens_right = sum(t == p for ts, ps in zip(truth, predicted) for t, p in zip(ts, ps))
    report = entity_report(truth, predicted, output_dict=True, zero_division=0)
    return {"eval_loss": sum(losses) / max(len(losses), 1),
            "f1": f1_score(truth, predicted, zero_division=0),
            "precision": precision_score(truth, predicted, zero_division=0),
            "recall": recall_score(truth, predicted, zero_division=0),
            "token_accuracy": tokens_right / sum(map(len, truth)),
            "per_type": {k: {m.replace("-score", ""): v for m, v in report[k].items()}
                         for k in report if not k.endswith(" avg")},
            "samples": [{"tokens": " ".join(w), "predicted": spans(w, p), "reference": spans(w, t)}
                        for w, t, p in list(zip(ds["tokens"], truth, predicted))[:3]]}


def evaluate(model, tokenizer, recipe: Recipe, stage: str, names: list[str], ds, out_dir: Path | None = None,
             prefix: str = "") -> dict:
    """Metrics of `model` on the records of `ds` (a Dataset in the recipe's format, labels as names)."""
    if recipe.eval.max_samples is not None:
        ds = ds.select(range(min(recipe.eval.max_samples, len(ds))))
    model.eval()
    if stage == "tag":
        return _tagging(model, tokenizer, recipe, names, ds)
    return _classification(model, tokenizer, recipe, stage, names, ds, out_dir, prefix)
