"""Fetch, verify and prepare the `dataset` (MNIST by default): one train/val file and one test file of uint8 images
and int64 labels."""

from common import METRICS, RAW, TEST, TRAIN, load_params
from mnistpipe import data, io
from mnistpipe.runner import run_stage


def main() -> None:
    params = load_params()
    p, dataset = params.download, params.dataset
    # The raw files land in a temporary folder that replaces data/raw only once everything parsed.
    with io.atomic_dir(RAW) as raw_dir:
        raw = data.download(data.mirror_list(dataset), raw_dir, dataset=dataset, timeout=p.timeout,
                            checksums=p.verify_md5)
        x, y = data.load_pair(raw["train_images"], raw["train_labels"], name="train")
        x_test, y_test = data.load_pair(raw["test_images"], raw["test_labels"], name="test")
        parts = data.split(x, y, val_size=p.val_size, seed=params.seed, limit=p.train_limit)
    if p.test_limit:
        # clone: a slice keeps the whole storage, and torch.save would write all 10,000 images
        x_test, y_test = x_test[: p.test_limit].clone(), y_test[: p.test_limit].clone()
    io.save_tensors(TRAIN, parts)
    io.save_tensors(TEST, {"x_test": x_test, "y_test": y_test})
    io.write_json(METRICS / "download.json", {
        "n_train": len(parts["y_train"]), "n_val": len(parts["y_val"]), "n_test": len(y_test),
        "train_label_counts": parts["y_train"].bincount(minlength=10).tolist(),
    })


if __name__ == "__main__":
    run_stage(main)
