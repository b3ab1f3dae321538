"""Train the convolutional denoising autoencoder (noisy -> clean); val PSNR is logged per epoch."""

import torch

from common import CHECKPOINTS, METRICS, NOISY_TRAIN, TRAIN, load_params, load_split
from mnistpipe import io, models, noise, tensors, tracking, train
from mnistpipe.runner import run_stage


def main() -> None:
    params = load_params()
    p = params.train_dae
    clean = load_split(TRAIN, producer="download")
    noisy = load_split(NOISY_TRAIN, producer="add_awgn")
    # Noisy and clean images pair up by index: as many of each (clean's labels count its images).
    tensors.check_counts(noisy, clean, images_source=str(NOISY_TRAIN), labels_source=str(TRAIN), producer="add_awgn")
    x_noisy, x_clean = noisy["x_train"], clean["x_train"]
    if p.train_size and p.train_size < len(x_clean):  # index only when subsetting: 55k images copied are 170 MB
        idx = torch.randperm(len(x_clean), generator=torch.Generator().manual_seed(params.seed))[:p.train_size]
        x_noisy, x_clean = x_noisy[idx], x_clean[idx]
    model = models.DAE(params.dae_config(), seed=params.seed)
    with tracking.live_log(METRICS / "train_dae") as live:
        result = train.train_dae(model, x_noisy, x_clean, noisy["x_val"], clean["x_val"], lr=p.lr, epochs=p.epochs,
                                 batch_size=p.batch_size, weight_decay=p.weight_decay, seed=params.seed,
                                 device=params.device, on_epoch=live.log_epoch, progress=True)
        val_out = train.predict(model, noisy["x_val"], device=params.device)
        live.summary.update(result.metrics, val_ssim=noise.mean_ssim(val_out, clean["x_val"]),
                            train_images=len(x_clean))
        io.save_checkpoint(CHECKPOINTS["dae"], model, kind="dae", stage="train_dae",
                           meta={"dataset": params.dataset, **result.metrics})


if __name__ == "__main__":
    run_stage(main)
