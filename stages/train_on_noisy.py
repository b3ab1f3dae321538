"""Train the tuned CNN configuration on the noisy training images (clean labels)."""

from retrain import train_tuned_on

from common import NOISY_TRAIN
from mnistpipe.runner import run_stage


def main() -> None:
    train_tuned_on(stage="train_on_noisy", images=NOISY_TRAIN, images_producer="add_awgn", checkpoint="noisy")


if __name__ == "__main__":
    run_stage(main)
