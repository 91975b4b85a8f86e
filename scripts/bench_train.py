"""One training step of the real Wan2.1-I2V-14B configuration on one GPU: LoRA fine-tune and DMD distill,
dense vs input-aware sparse attention.

    python scripts/bench_train.py                               # train + distill, dense + iasa, 512x512x81
    python scripts/bench_train.py --tasks distill --attention iasa --sparse-backend flex

Random weights at the real sizes, built directly on the GPU in bf16 (no files needed); LoRA rank 128 on
q, k, v, o, ffn.0, ffn.2 (float32 weights, AdamW), trainable pose guider, gradient checkpointing, bf16
autocast, the training code's own loss functions:
- train: one fine-tune optimiser step (flow-matching loss, bidirectional layout for iasa);
- distill: one critic update then one generator update on the same base with three adapters (teacher,
  generator, critic): the generator step runs the 1-step student with grad (causal layout), the teacher
  twice (cfg != 1) and the critic once without grad, and the region loss decoding 1 latent frame with grad;
  critic_s and generator_s are reported too, so a run with critic_steps_per_generator_step = 5 costs
  5 critic_s + generator_s per generator step.
step_s is the median over --steps timed steps after one warm-up step (which pays compilation); peak_mem_gb
is the peak allocated GPU memory of the task (weights included). Results: benchmarks/results/train.json,
rewritten after every record; a failure (e.g. out of memory) becomes a record with "error" and the run
goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Callable

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
# Less fragmentation between the differently shaped phases of a distill step (set before CUDA starts).
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402
from einops import rearrange  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iasa.atomic_io import write_json  # noqa: E402
from iasa.attention import SparseAttentionConfig, build_sparse_layout  # noqa: E402
from iasa.eval.speed import synchronized_seconds  # noqa: E402
from iasa.pose.synthetic_speaker import synthetic_speaker  # noqa: E402
from iasa.pose.drawing import draw_pose_frames  # noqa: E402
from iasa.pose.style import CHECKPOINT_STYLE  # noqa: E402
from iasa.train.adapters import (  # noqa: E402
    adapter_parameters,
    copy_adapter,
    freeze_adapter_in_base_dtype,
    set_trainable,
    use_adapter,
)
from iasa.train.cache import ClipBatch  # noqa: E402
from iasa.train.config import DistillConfig, FlowConfig, LoraConfig  # noqa: E402
from iasa.train.distill import CRITIC, GENERATOR, TEACHER, Distiller  # noqa: E402
from iasa.train.finetune import flow_matching_loss  # noqa: E402
from iasa.train.flow_matching import TrainingSchedule  # noqa: E402
from iasa.train.model import PoseDiT, load_training_components  # noqa: E402
from iasa.train.runtime import clip_and_step, make_optimizer  # noqa: E402
from iasa.video.config import (  # noqa: E402
    CLIP_FEATURE_DIM,
    CLIP_TOKENS,
    CONDITION_CHANNELS,
    LATENT_CHANNELS,
    AttentionConfig,
    VideoModelConfig,
    architecture,
)
from iasa.video.latent_grid import VAE_STRIDE, num_latent_frames  # noqa: E402
from iasa.video.lora import inject_lora  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "train.json"
LORA = LoraConfig(rank=128, alpha=128)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def default_sparse_backend() -> str:
    try:
        import triton  # noqa: F401

        from iasa.attention.fast import fast_sparse_attention  # noqa: F401
    except ImportError:
        return "flex"
    return "fast"


def make_batch(size: tuple[int, int], frames: int, text_dim: int, text_length: int, sparse: SparseAttentionConfig, device, dtype) -> ClipBatch:
    """A random cached training clip with real pose images and layouts of a synthetic speaker."""
    height, width = size
    latent = (num_latent_frames(frames), height // VAE_STRIDE, width // VAE_STRIDE)
    keypoints = synthetic_speaker(num_frames=frames, image_size=size, seed=0)
    pose_frames = torch.from_numpy(draw_pose_frames(keypoints, CHECKPOINT_STYLE))
    pose = rearrange(pose_frames, "f h w c -> 1 c f h w").float() / 255
    layouts = {direction: build_sparse_layout(keypoints, replace(sparse, direction=direction)) for direction in ("both", "past")}
    batch = ClipBatch(
        name="bench", latents=torch.randn(1, LATENT_CHANNELS, *latent), context=torch.randn(1, text_length, text_dim),
        negative_context=torch.randn(1, text_length, text_dim), clip_feature=torch.randn(1, CLIP_TOKENS, CLIP_FEATURE_DIM),
        y=torch.randn(1, CONDITION_CHANNELS, *latent), pose_video=pose, reference_pose=pose[:, :, 0],
        layouts=layouts, keypoints=keypoints, layout_rule=sparse,
    )  # fmt: skip
    return batch.to(device, dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["train", "distill"], choices=["train", "distill"])
    parser.add_argument("--attention", nargs="+", default=["dense", "iasa"], choices=["dense", "iasa"])
    parser.add_argument("--sparse-backend", default="auto", choices=["auto", "fast", "flex", "reference"])
    parser.add_argument("--resolution", default="512x512", help="HxW")
    parser.add_argument("--frames", type=int, default=81, help="video frames (4k + 1)")
    parser.add_argument("--steps", type=int, default=1, help="timed steps after the warm-up step")
    parser.add_argument("--model-size", default="14b", help="14b, or tiny for a CPU smoke run")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--region-latent-frames", type=int, default=1, help="latent frames decoded with grad for the region loss (0 = off)")
    parser.add_argument("--teacher-cfg-scale", type=float, default=DistillConfig.teacher_cfg_scale, help="1 = one teacher pass per generator step")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    backend = default_sparse_backend() if args.sparse_backend == "auto" else args.sparse_backend
    size = tuple(int(v) for v in args.resolution.lower().split("x"))
    results = {
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "sparse_backend": backend, "lora_rank": LORA.rank,
        "gradient_checkpointing": not args.no_gradient_checkpointing, "records": [],
    }  # fmt: skip

    def add(record: dict) -> None:
        results["records"].append(record)
        write_json(args.output, results)
        print(json.dumps(record), flush=True)

    torch.manual_seed(0)
    model = VideoModelConfig(model_size=args.model_size, model_dir=None, unianimate_checkpoint=None,
                             dtype="bfloat16" if dtype == torch.bfloat16 else "float32", device=device.type)  # fmt: skip
    parts = ("dit", "pose_guider") + (("vae",) if "distill" in args.tasks else ())
    sparse = SparseAttentionConfig(direction="both")
    components = load_training_components(model, parts)
    checkpointing = not args.no_gradient_checkpointing
    pose_dit = PoseDiT(
        components.dit, components.pose_guider, components.dtype, backend, gradient_checkpointing=checkpointing
    )
    arch = architecture(args.model_size)
    batch = make_batch(size, args.frames, arch.text_dim, arch.text_length, sparse, device, dtype)
    dit, guider = pose_dit.dit, pose_dit.pose_guider
    # The fine-tune trains the adapter the distillation then uses as its teacher: one base, three adapters.
    inject_lora(dit, LORA.rank, LORA.alpha, LORA.targets, TEACHER)
    schedule = TrainingSchedule.from_config(FlowConfig())

    def measure(task: str, attention: str, step: Callable[[], dict], extra: dict | None = None) -> None:
        record = {"task": task, "attention": attention, "resolution": f"{args.resolution}x{args.frames}", **(extra or {})}
        reset_peak(device)
        try:
            synchronized_seconds(step, device)  # warm-up: compilation, optimiser state allocation
            parts_seconds: list[dict] = []
            timings = []
            for _ in range(args.steps):
                timings.append(synchronized_seconds(lambda: parts_seconds.append(step()), device))
            record["step_s"] = round(statistics.median(timings), 3)
            for key in parts_seconds[-1]:
                record[key] = round(statistics.median(p[key] for p in parts_seconds), 3)
            record["peak_mem_gb"] = peak_gib(device)
        except Exception as error:  # noqa: BLE001 - an out-of-memory record is a result too
            traceback.print_exc()
            record["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            record["peak_mem_gb"] = peak_gib(device)
        add(record)

    if "train" in args.tasks:
        use_adapter(dit, TEACHER)
        guider.float()  # trained weights in float32, as run_finetune does
        trained = list(adapter_parameters(dit, TEACHER).values()) + list(guider.parameters())
        set_trainable([dit, guider], trained)
        optimizer, scheduler = make_optimizer(trained, DistillConfig().optim, 1e-4)
        for attention in args.attention:
            def train_step() -> dict:
                layout = batch.layouts["both"] if attention == "iasa" else None
                with autocast:
                    loss = flow_matching_loss(pose_dit, batch.latents, batch, layout, schedule, FlowConfig())
                loss.backward()
                clip_and_step(trained, optimizer, scheduler, 1.0)
                return {}

            measure("train", attention, train_step)
        del optimizer, scheduler, trained
        reset_peak(device)

    if "distill" in args.tasks:
        for name in (GENERATOR, CRITIC):
            inject_lora(dit, LORA.rank, LORA.alpha, LORA.targets, name)
            copy_adapter(dit, TEACHER, name)
        freeze_adapter_in_base_dtype(dit, TEACHER)
        guider.requires_grad_(False)
        guider.to(dtype)
        generator_params = list(adapter_parameters(dit, GENERATOR).values())
        critic_params = list(adapter_parameters(dit, CRITIC).values())
        generator_optimizer = make_optimizer(generator_params, DistillConfig().optim, 1e-5)
        critic_optimizer = make_optimizer(critic_params, DistillConfig().optim, 1e-5)
        for attention in args.attention:
            config = DistillConfig(attention=AttentionConfig(attention=attention, backend=backend), generator_sigmas=(1.0,),
                                   teacher_cfg_scale=args.teacher_cfg_scale)  # fmt: skip
            config.region = replace(config.region, weight=1.0 if args.region_latent_frames else 0.0, latent_frames=max(args.region_latent_frames, 1))
            distiller = Distiller(config, pose_dit, components.vae)

            def update(params, optimizers, loss_fn) -> None:
                set_trainable([dit, guider], params)
                with autocast:
                    loss = loss_fn(batch)
                loss = loss["total"] if isinstance(loss, dict) else loss
                loss.backward()
                clip_and_step(params, *optimizers, 10.0)

            def distill_step() -> dict:
                critic_s = synchronized_seconds(lambda: update(critic_params, critic_optimizer, distiller.critic_loss), device)
                generator_s = synchronized_seconds(lambda: update(generator_params, generator_optimizer, distiller.generator_loss), device)
                return {"critic_s": critic_s, "generator_s": generator_s}

            measure("distill", attention, distill_step, {"teacher_cfg_scale": config.teacher_cfg_scale, "generator_steps": 1,
                                                          "region_latent_frames": args.region_latent_frames})  # fmt: skip


if __name__ == "__main__":
    main()
