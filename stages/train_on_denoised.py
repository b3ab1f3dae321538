"""Train the tuned CNN configuration on the autoencoder's denoised training images (clean labels)."""

from common import DENOISED_TRAIN, train_tuned_on
from mnistpipe.runner import run_stage


def main() -> None:
    train_tuned_on(stage="train_on_denoised", images=DENOISED_TRAIN, images_producer="denoise", checkpoint="denoised")


if __name__ == "__main__":
    run_stage(main)
