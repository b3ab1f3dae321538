"""Train the convolutional denoising autoencoder (noisy -> clean); val PSNR is logged per epoch."""

import torch

from common import CHECKPOINTS, METRICS, NOISY_TRAIN, TRAIN, load_params, load_split
from mnistpipe import io, noise, tensors, tracking, train
from mnistpipe.architecture import DAEConfig
from mnistpipe.errors import run_stage
from mnistpipe.params import section


def main() -> None:
    config, p = DAEConfig.split(section(params := load_params(), "train_dae"))
    train_size = p.pop("train_size")
    clean = load_split(TRAIN, producer="download")
    noisy = load_split(NOISY_TRAIN, producer="add_awgn")
    # Noisy and clean images pair up by index: as many of each (clean's labels count its images).
    tensors.check_counts(noisy, clean, images_source=str(NOISY_TRAIN), labels_source=str(TRAIN), producer="add_awgn")
    x_noisy, x_clean = noisy["x_train"], clean["x_train"]
    if train_size and train_size < len(x_clean):  # index only when subsetting: a copy of 55k images is 170 MB
        idx = torch.randperm(len(x_clean), generator=torch.Generator().manual_seed(p["seed"]))[:train_size]
        x_noisy, x_clean = x_noisy[idx], x_clean[idx]
    with tracking.live_log(METRICS / "train_dae") as live:
        model, result = train.train_dae(x_noisy, x_clean, noisy["x_val"], clean["x_val"], config, **p,
                                        device=params.device, on_epoch=live.log_epoch, progress=True)
        val_out = train.predict(model, noisy["x_val"], device=params.device)
        live.summary.update(result.metrics, val_ssim=noise.mean_ssim(val_out, clean["x_val"]),
                            train_images=len(x_clean))
        io.save_checkpoint(CHECKPOINTS["dae"], model, kind="dae", config=model.config, stage="train_dae",
                           meta={"dataset": params.dataset, **result.metrics})


if __name__ == "__main__":
    run_stage(main)
