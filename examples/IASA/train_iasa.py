"""Train IASA: cache a dataset, fine-tune the sparse-attention LoRA, distil a few-step student (and, for a model
trained from scratch such as the miniature, pretrain the VAE and the dense teacher, and distil a TAE decoder from
its VAE: config/miniature/, scripts/run_miniature.sh runs every stage).

    python examples/IASA/train_iasa.py --config config/data_process.yaml
    python examples/IASA/train_iasa.py --config config/train_sparseattn_lora.yaml [key=value ...]
    python examples/IASA/train_iasa.py --config config/distill_dmd.yaml teacher_lora=outputs/train/lora.safetensors
    python examples/IASA/train_iasa.py --config config/miniature/vae.yaml       (task pretrain_vae)
    python examples/IASA/train_iasa.py --config config/miniature/teacher.yaml   (task pretrain)
    python examples/IASA/train_iasa.py --config config/miniature/tae.yaml       (task distill_tae)
Multi-GPU: accelerate launch --config_file <accelerate.yaml> examples/IASA/train_iasa.py --config ...
(data parallel, or FSDP2 sharding of the DiT when the accelerate config asks for FSDP), or DeepSpeed ZeRO-1/2
over the trained adapters (optimiser state split, ZeRO-2 also gradients; needs pip install deepspeed):
    accelerate launch --use_deepspeed --zero_stage 2 --num_processes N examples/IASA/train_iasa.py --config ...
ZeRO-3 and DeepSpeed offload are refused: to shard the frozen base use FSDP (accelerate launch --use_fsdp ...).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from iasa.errors import InputError  # noqa: E402
from iasa.train.tasks import main  # noqa: E402

if __name__ == "__main__":
    try:
        main()
    except InputError as error:  # bad user input: the message names the file or key and the fix
        raise SystemExit(f"error: {error}") from None
