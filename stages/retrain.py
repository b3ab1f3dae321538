"""The two retraining stages' shared step: fine-tune the tuned CNN on other images with the clean labels.

Its own file, imported by train_on_noisy and train_on_denoised only, so that editing it (or the training modules it
loads) reruns those two stages and no other.
"""

from __future__ import annotations

from pathlib import Path

from common import CHECKPOINTS, METRICS, PRODUCERS, TRAIN, load_data, load_params, load_split, read_config
from mnistpipe import io, models, params, tensors, tracking, train


def train_tuned_on(*, stage: str, images: Path, images_producer: str, checkpoint: str) -> None:
    """Stage `stage`: fine-tune the tuned CNN on other images (noisy or denoised: `images`, written by
    `images_producer`) with the clean labels, for the stage's own `epochs` at its own peak `lr` (the rest of the
    tuned training settings kept), and save it as CHECKPOINTS[`checkpoint`]."""
    run = load_params()
    section = getattr(run, stage)
    _, training = params.split_cnn(read_config())
    training.update(epochs=section.epochs, lr=section.lr)
    labels = load_data(TRAIN, producer="download")
    x = load_split(images, producer=images_producer)
    tensors.check_counts(x, labels, images_source=str(images), labels_source=str(TRAIN), producer=images_producer)
    tuned = CHECKPOINTS["tuned"]
    model = models.from_checkpoint(io.load_checkpoint(tuned, kind="cnn", producer=PRODUCERS["tuned"]), path=str(tuned),
                                    seed=run.seed)
    with tracking.live_log(METRICS / stage) as live:
        result = train.train_cnn(model, x["x_train"], labels["y_train"], x["x_val"], labels["y_val"], **training,
                                 seed=run.seed, device=run.device, on_epoch=live.log_epoch, progress=True)
        live.summary.update(result.metrics)
        io.save_checkpoint(CHECKPOINTS[checkpoint], model, kind="cnn", stage=stage,
                           meta={"train_set": checkpoint, "dataset": run.dataset, **result.metrics})
