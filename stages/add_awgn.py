"""Add white Gaussian noise to every image (train, val, test); report the noisy test set's PSNR."""

import torch

from common import METRICS, NOISY_TEST, NOISY_TRAIN, TEST, TRAIN, load_data, load_params
from mnistpipe import io, noise, tensors
from mnistpipe.runner import run_stage


def main() -> None:
    params = load_params()
    std = params.add_awgn.std
    train = load_data(TRAIN, producer="download")
    test = load_data(TEST, producer="download")
    gen = torch.Generator().manual_seed(params.seed)
    noisy, clean = {}, {}
    for name, x in (("x_train", train["x_train"]), ("x_val", train["x_val"]), ("x_test", test["x_test"])):
        clean[name] = tensors.to_float(x)
        # Stored as 8-bit images, like a real noisy dataset; PSNR below is measured on what is stored.
        noisy[name] = tensors.to_uint8(noise.add_awgn(clean[name], std=std, generator=gen))
    io.save_tensors(NOISY_TRAIN, {"x_train": noisy["x_train"], "x_val": noisy["x_val"]})
    io.save_tensors(NOISY_TEST, {"x_test": noisy["x_test"]})
    noisy_test = tensors.to_float(noisy["x_test"])
    io.write_json(METRICS / "add_awgn.json", {
        "std": std,
        "test_psnr_db": noise.mean_psnr(noisy_test, clean["x_test"]),
        "test_ssim": noise.mean_ssim(noisy_test, clean["x_test"]),
    })


if __name__ == "__main__":
    run_stage(main)
