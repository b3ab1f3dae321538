"""Apply the autoencoder to the noisy train, val and test images; report PSNR/SSIM before and after."""

from common import (
    CHECKPOINTS,
    DENOISED_TEST,
    DENOISED_TRAIN,
    METRICS,
    NOISY_TEST,
    NOISY_TRAIN,
    TEST,
    load_params,
    load_split,
)
from mnistpipe import io, models, noise, tensors, train
from mnistpipe.errors import PipelineError
from mnistpipe.runner import run_stage


def main() -> None:
    params = load_params()
    dae = models.from_checkpoint(io.load_checkpoint(CHECKPOINTS["dae"], kind="dae", producer="train_dae"),
                                 path=str(CHECKPOINTS["dae"]))
    noisy = {**load_split(NOISY_TRAIN, producer="add_awgn"), **load_split(NOISY_TEST, producer="add_awgn")}
    clean_test = load_split(TEST, producer="download")["x_test"]
    if noisy["x_test"].shape != clean_test.shape:
        raise PipelineError(f"{NOISY_TEST} and {TEST} differ in shape; rerun `dvc repro add_awgn`")
    batch = params.denoise.batch_size
    out = {k: train.predict(dae, v, batch_size=batch, device=params.device) for k, v in noisy.items()}
    stored = {k: tensors.to_uint8(v) for k, v in out.items()}
    io.save_tensors(DENOISED_TRAIN, {"x_train": stored["x_train"], "x_val": stored["x_val"]})
    io.save_tensors(DENOISED_TEST, {"x_test": stored["x_test"]})
    denoised_test = tensors.to_float(stored["x_test"])  # measure what later stages actually see
    io.write_json(METRICS / "denoise.json", {
        "test_psnr_noisy_db": noise.mean_psnr(noisy["x_test"], clean_test),
        "test_psnr_denoised_db": noise.mean_psnr(denoised_test, clean_test),
        "test_ssim_noisy": noise.mean_ssim(noisy["x_test"], clean_test),
        "test_ssim_denoised": noise.mean_ssim(denoised_test, clean_test),
    })


if __name__ == "__main__":
    run_stage(main)
