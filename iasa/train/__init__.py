"""Training: dataset caching (data_process), sparse-attention LoRA fine-tune (train) and DMD distillation
with the region-weighted loss (distill). Entry point: examples/IASA/train_iasa.py."""
