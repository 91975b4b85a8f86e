from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="iasa",
    version="0.1.0",
    description="Input-aware sparse attention for real-time co-speech video generation",
    packages=find_packages(include=["iasa", "iasa.*"]),
    python_requires=">=3.10",
    install_requires=requirements,
    # deepspeed: accelerate launch --use_deepspeed (ZeRO-1/2 training); the dev extra installs it so its tests run.
    # onnx (dev): the tests write tiny DWPose models. scikit-image (dev): the reference SSIM and PSNR the video metrics are tested against.
    extras_require={"deepspeed": ["deepspeed>=0.19.8"], "dev": ["pytest>=7", "hypothesis", "deepspeed>=0.19.8", "onnx", "scikit-image"]},
)
