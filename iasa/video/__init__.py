"""Pose-driven Wan2.1-I2V-14B with UniAnimate's pose guider and input-aware sparse self-attention.

Reusable pieces (also for training, iasa/train):
    load_wan_components(WanModelConfig)              networks from a model folder or random (assembly.py)
    apply_unianimate_checkpoint / inject_lora / save_lora / load_lora                     (lora.py)
    patch_self_attention(dit); SelfAttentionArgs (per forward)                    (attention_patch.py)
    predict_flow(dit, latents, timestep, FlowConditions(...), layout, backend)          (denoiser.py)
    VideoGenerator.from_config(...).generate(...)                                      (pipeline.py)

Streaming output (model-free; scripts/stream.py wires them to the chunked generator):
    StreamingVideoWriter(path, fps, size, audio).append(frames) ... close() / write_video (video_io.py)
    PreviewServer(host, port, audio_path, fps).start() / publish(frames) / finish()  (preview_server.py)
    StreamClock().mark_inputs_ready() / mark_frames(n) / summary(video_fps)           (stream_clock.py)
"""
