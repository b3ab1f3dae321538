"""Train the baseline CNN on clean MNIST with the report's six top-level hyperparameters and the shared recipe."""

from common import CHECKPOINTS, METRICS, TRAIN, load_params, load_split
from mnistpipe import io, models, tracking, train
from mnistpipe.runner import run_stage


def main() -> None:
    params = load_params()
    d = load_split(TRAIN, producer="download")
    model = models.CNN(params.cnn_config(), seed=params.seed)
    with tracking.live_log(METRICS / "train_baseline") as live:
        result = train.train_cnn(model, d["x_train"], d["y_train"], d["x_val"], d["y_val"], **params.cnn_training(),
                                 seed=params.seed, device=params.device, on_epoch=live.log_epoch, progress=True)
        live.summary.update(result.metrics)
        io.save_checkpoint(CHECKPOINTS["baseline"], model, kind="cnn", stage="train_baseline",
                           meta={"train_set": "clean", "dataset": params.dataset, **result.metrics})


if __name__ == "__main__":
    run_stage(main)
