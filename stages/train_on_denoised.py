"""Train the tuned CNN configuration on the autoencoder's denoised training images (clean labels)."""

from retrain import train_tuned_on

from common import DENOISED_TRAIN
from mnistpipe.runner import run_stage


def main() -> None:
    train_tuned_on(stage="train_on_denoised", images=DENOISED_TRAIN, images_producer="denoise", checkpoint="denoised")


if __name__ == "__main__":
    run_stage(main)
