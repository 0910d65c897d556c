"""PSNR and SSIM under the convention SR papers use, built on torchmetrics."""
