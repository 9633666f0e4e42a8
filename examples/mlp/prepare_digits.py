#!/usr/bin/env python3
"""Make the digits examples' data from the copy of the UCI handwritten
digits (1,797 8x8 images) that scikit-learn's wheel ships: no download
from a hub, only pip's from PyPI (or a wheel you already have).

    python3 examples/mlp/prepare_digits.py OUT [--wheel scikit_learn-*.whl]

writes, in OUT:
  digits.bin      the data set, the shared input `digits` of digits-train
                  (every fifth image held out for measuring accuracy)
  batches/*.bin   the held-out images in batches of 40, the inputs of
                  digits-classify
  labels.txt      the held-out images' true classes, one a line, in the
                  batches' order

Only the standard library is used; the formats are in
examples/mlp/src/dataset.rs and examples/digits-classify/src/lib.rs.
"""

import argparse
import csv
import glob
import gzip
import io
import os
import struct
import subprocess
import sys
import zipfile

# A pinned release: the same data on every machine.
SKLEARN = "scikit-learn==1.9.1"
DATA = "sklearn/datasets/data/digits.csv.gz"
BATCH = 40


def fetch_wheel(folder):
    os.makedirs(folder, exist_ok=True)
    found = glob.glob(os.path.join(folder, "scikit_learn-*.whl"))
    if found:
        return found[0]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", SKLEARN, "--no-deps", "--only-binary=:all:",
         "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--quiet", "-d", folder],
        check=True,
    )
    return glob.glob(os.path.join(folder, "scikit_learn-*.whl"))[0]


def read_digits(wheel):
    with zipfile.ZipFile(wheel) as z:
        text = gzip.decompress(z.read(DATA)).decode()
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    images = [[float(v) / 16.0 for v in r[:-1]] for r in rows]
    labels = [int(float(r[-1])) for r in rows]
    return images, labels


def floats(values):
    return struct.pack(f"<{len(values)}f", *values)


def words(values):
    return struct.pack(f"<{len(values)}I", *values)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--wheel", help="a scikit-learn wheel already on disk (else pip downloads one into OUT/wheel)")
    args = parser.parse_args()
    images, labels = read_digits(args.wheel or fetch_wheel(os.path.join(args.out, "wheel")))
    features = len(images[0])
    test = [i for i in range(len(images)) if i % 5 == 4]
    train = [i for i in range(len(images)) if i % 5 != 4]
    with open(os.path.join(args.out, "digits.bin"), "wb") as f:
        f.write(words([len(train), len(test), features, 10]))
        for part in (train, test):
            f.write(floats([v for i in part for v in images[i]]))
        for part in (train, test):
            f.write(words([labels[i] for i in part]))
    batches = os.path.join(args.out, "batches")
    os.makedirs(batches, exist_ok=True)
    for n, start in enumerate(range(0, len(test), BATCH)):
        part = test[start:start + BATCH]
        with open(os.path.join(batches, f"batch-{n:03}.bin"), "wb") as f:
            f.write(words([len(part), features]))
            f.write(floats([v for i in part for v in images[i]]))
    with open(os.path.join(args.out, "labels.txt"), "w") as f:
        f.writelines(f"{labels[i]}\n" for i in test)
    print(f"{len(train)} training and {len(test)} held-out digits into {args.out}")


if __name__ == "__main__":
    main()
