"""Train the baseline CNN on clean MNIST with the report's six top-level hyperparameters and the shared recipe."""

from common import CHECKPOINTS, METRICS, TRAIN, load_params, load_split
from mnistpipe import io, tracking, train
from mnistpipe.architecture import CNNConfig
from mnistpipe.errors import run_stage
from mnistpipe.params import cnn_hyperparameters


def main() -> None:
    params = load_params()
    config, training = CNNConfig.split({**cnn_hyperparameters(params), **params.recipe.model_dump()})
    d = load_split(TRAIN, producer="download")
    with tracking.live_log(METRICS / "train_baseline") as live:
        model, result = train.train_cnn(d["x_train"], d["y_train"], d["x_val"], d["y_val"], config, **training,
                                        seed=params.seed, device=params.device, on_epoch=live.log_epoch,
                                        progress=True)
        live.summary.update(result.metrics)
        io.save_checkpoint(CHECKPOINTS["baseline"], model, kind="cnn", config=model.config, stage="train_baseline",
                           meta={"train_set": "clean", "dataset": params.dataset, **result.metrics})


if __name__ == "__main__":
    run_stage(main)
