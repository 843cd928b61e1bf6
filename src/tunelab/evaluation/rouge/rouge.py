"""ROUGE as a local `evaluate` metric, for English and Chinese, offline.

We ship our own because `evaluate.load("rouge")` fetches its script from the Hugging Face Hub (it fails
offline) and rouge_score's default tokenizer keeps only ASCII letters and digits, so Chinese scores 0.
Load it by path: `evaluate.load("<this directory>")` or `evaluate.load("<this file>")`.
"""

import re
import unicodedata

import datasets
import evaluate
from rouge_score import rouge_scorer, tokenizers
from nltk.stem import porter

_DESCRIPTION = """\
ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures, computed by rouge_score's RougeScorer. English uses
rouge_score's own tokenizer (lowercase, ASCII letters and digits, optional Porter stemming). Chinese uses a
tokenizer of ours: one token per CJK character ("char", the default) or jieba words ("jieba"); runs of
other letters and digits are tokens, punctuation and whitespace are dropped. ROUGE-Lsum splits summaries
into sentences on newlines; Chinese text with no newline is split after 。！？ instead.
Aggregation: each score is the plain mean over examples of the per-example F-measure (no bootstrap
resampling, unlike rouge_score's BootstrapAggregator and the Hub metric's use_aggregator=True).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted strings.
    references: list of reference strings, one per prediction.
    rouge_types: which scores, default ["rouge1", "rouge2", "rougeL", "rougeLsum"] (any rouge_score type).
    use_stemmer: Porter-stem words longer than 3 letters (English words; in Chinese mode, the latin words).
    language: "auto" (default: "zh" if any text contains a CJK character, else "en"), "en" or "zh".
    zh_tokenizer: "char" (default) or "jieba"; used only when the language is Chinese.
Returns:
    one float per rouge type (the mean F-measure over examples), plus "language" ("en" or "zh") and
    "tokenizer" ("default", "char" or "jieba") saying what was used.
Examples:
    >>> rouge = evaluate.load("src/tunelab/evaluation/rouge")
    >>> rouge.compute(predictions=["今天天气很好"], references=["今天天气不错"])["rouge1"]
    0.6666666666666666
"""

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W04-1013",
}
"""

ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
LANGUAGES = ("auto", "en", "zh")
ZH_TOKENIZERS = ("char", "jieba")

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_HAS_CJK = re.compile(f"[{_CJK}]")
# One CJK character, or a run of other letters/digits (underscore and punctuation are not word characters here).
_CHAR_TOKEN = re.compile(f"[{_CJK}]|(?:(?![{_CJK}])[^\\W_])+")
_WORDLIKE = re.compile(r"[^\W_]")
_SENTENCE_END = re.compile("([。！？])")


def detect_language(texts):
    """Return zh if any of the texts contains a CJK character, else en."""
    return "zh" if any(_HAS_CJK.search(t) for t in texts) else "en"


def split_zh_sentences(text):
    """For rougeLsum: text that has no newline gets one after each 。！？ (rouge_score splits on newlines)."""
    return text if "\n" in text else _SENTENCE_END.sub("\\1\n", text)


class ChineseTokenizer(tokenizers.Tokenizer):
    """Tokens for Chinese ROUGE (NFKC-normalised, lowercased, so full-width ＡＢＣ１２３ match abc123).

    "char": each CJK character is a token, each run of other letters/digits is a token, everything else
    (punctuation, whitespace) is dropped. "jieba": jieba.lcut words, dropping tokens with no letter or digit.
    With a stemmer, tokens of letters longer than 3 characters are Porter-stemmed, as rouge_score does.
    """

    def __init__(self, mode="char", use_stemmer=False):
        if mode not in ZH_TOKENIZERS:
            raise ValueError(f"zh_tokenizer must be one of {ZH_TOKENIZERS}, got {mode!r}")
        self.mode = mode
        self._stemmer = porter.PorterStemmer() if use_stemmer else None
        if mode == "jieba":
            import logging

            import jieba  # optional: needed only for zh_tokenizer="jieba"

            jieba.setLogLevel(logging.WARNING)
            self._cut = jieba.lcut

    def tokenize(self, text):
        text = unicodedata.normalize("NFKC", text).lower()
        if self.mode == "char":
            tokens = _CHAR_TOKEN.findall(text)
        else:
            tokens = [w.strip() for w in self._cut(text)]
            tokens = [w for w in tokens if _WORDLIKE.search(w)]
        if self._stemmer is not None:
            tokens = [self._stemmer.stem(w) if len(w) > 3 and not _HAS_CJK.search(w) else w for w in tokens]
        return tokens


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://aclanthology.org/W04-1013"],
        )

    def _compute(self, predictions, references, rouge_types=None, use_stemmer=False, language="auto",
                 zh_tokenizer="char"):
        rouge_types = list(rouge_types or ROUGE_TYPES)
        if language not in LANGUAGES:
            raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
        if zh_tokenizer not in ZH_TOKENIZERS:
            raise ValueError(f"zh_tokenizer must be one of {ZH_TOKENIZERS}, got {zh_tokenizer!r}")
        if not predictions:
            raise ValueError("ROUGE needs at least one prediction")
        if language == "auto":
            language = detect_language(list(predictions) + list(references))
        if language == "zh":
            tokenizer = ChineseTokenizer(zh_tokenizer, use_stemmer)
            scorer = rouge_scorer.RougeScorer(rouge_types, tokenizer=tokenizer)
            predictions = [split_zh_sentences(p) for p in predictions]
            references = [split_zh_sentences(r) for r in references]
            used = zh_tokenizer
        else:
            scorer = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer)
            used = "default"
        totals = dict.fromkeys(rouge_types, 0.0)
        for prediction, reference in zip(predictions, references):
            scores = scorer.score(reference, prediction)  # rouge_score's order: (target, prediction)
            for key in rouge_types:
                totals[key] += scores[key].fmeasure
        result = {key: float(total / len(predictions)) for key, total in totals.items()}
        result.update(language=language, tokenizer=used)
        return result
