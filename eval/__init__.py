"""Metrics: reconstruction (PSNR, SSIM, mel distance, SI-SNR) and generation metrics."""
