"""Test accuracy against noise std for the clean CNN, the noisy-trained CNN and both CNNs behind the autoencoder."""

from common import CHECKPOINTS, METRICS, PLOTS, PRODUCERS, TEST, load_params, load_split
from mnistpipe import io, models, plots, robustness, train
from mnistpipe.runner import run_stage

# Method -> (checkpoint of its classifier, whether the autoencoder denoises the images first), and its legend.
METHODS = {"clean_cnn": ("tuned", False), "noisy_cnn": ("noisy", False),
           "dae_clean_cnn": ("tuned", True), "dae_denoised_cnn": ("denoised", True)}
LABELS = {"clean_cnn": "clean-trained CNN", "noisy_cnn": "noisy-trained CNN",
          "dae_clean_cnn": "autoencoder + clean-trained CNN", "dae_denoised_cnn": "autoencoder + denoised-trained CNN"}
CURVE = METRICS / "robustness_curve.csv"


def _load(name: str, kind: str):
    path = CHECKPOINTS[name]
    return models.from_checkpoint(io.load_checkpoint(path, kind=kind, producer=PRODUCERS[name]), path=str(path))


def main() -> None:
    params = load_params()
    p = params.robustness
    device = train.resolve_device(params.device)
    test = load_split(TEST, producer="download")
    nets = {name: _load(name, "cnn") for name in dict.fromkeys(ckpt for ckpt, _ in METHODS.values())}
    rows = robustness.robustness_curve(
        test["x_test"], test["y_test"], methods={m: (nets[ckpt], first) for m, (ckpt, first) in METHODS.items()},
        dae=_load("dae", "dae"), stds=p.stds, seed=params.seed, batch_size=p.batch_size, device=device)
    # Keys name the std and the measure (`std_0.4.clean_cnn_acc`); an infinite PSNR (no noise) is left out.
    io.write_json(METRICS / "robustness.json", {
        f"std_{row['std']:g}": {(f"{k}_acc" if k in METHODS else k): v for k, v in row.items()
                                if k != "std" and v is not None} for row in rows})
    lines = [",".join(["std", *METHODS])] + [",".join(str(row[k]) for k in ["std", *METHODS]) for row in rows]
    io.write_text(CURVE, "\n".join(lines) + "\n")  # the DVC linear plot: x = std, one column per method
    plots.save_png(plots.robustness(rows, LABELS, train_std=params.add_awgn.std), PLOTS / "robustness.png")


if __name__ == "__main__":
    run_stage(main)
