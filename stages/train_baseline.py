"""Train the baseline CNN on clean MNIST with the report's six top-level hyperparameters."""

from common import CHECKPOINTS, METRICS, TRAIN, load_params, load_split
from mnistpipe import io, tracking, train
from mnistpipe.architecture import CNNConfig
from mnistpipe.errors import run_stage
from mnistpipe.params import cnn_hyperparameters, section


def main() -> None:
    params = load_params()
    config, training = CNNConfig.split({**cnn_hyperparameters(params), **section(params, "train_baseline")})
    d = load_split(TRAIN, producer="download")
    summary: dict = {}
    with tracking.live_log(METRICS / "train_baseline", summary=summary) as on_epoch:
        model, result = train.train_cnn(d["x_train"], d["y_train"], d["x_val"], d["y_val"], config, **training,
                                        on_epoch=on_epoch, progress=True)
        summary.update(result.metrics)
        io.save_checkpoint(CHECKPOINTS["baseline"], model, kind="cnn", config=model.config,
                           meta={"train_set": "clean", **result.metrics}, stage="train_baseline")


if __name__ == "__main__":
    run_stage(main)
