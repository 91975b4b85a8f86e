"""Pose-driven Wan2.1-I2V-14B with UniAnimate's pose guider and input-aware sparse self-attention.

Reusable pieces (also for training, iasa/train):
    load_wan_components(WanModelConfig)              networks from a model folder or random (assembly.py)
    apply_unianimate_checkpoint / inject_lora / save_lora / load_lora                     (lora.py)
    patch_self_attention(dit); SelfAttentionArgs (per forward)                    (attention_patch.py)
    predict_flow(dit, latents, timestep, FlowConditions(...), layout, backend)          (denoiser.py)
    VideoGenerator.from_config(...).generate(...)                                      (pipeline.py)

Streaming generation (the 1-step causal student, chunk by chunk with a key/value cache):
    predict_flow_streamed(dit, latents, ..., StreamedKeys) -> flow, keys written into the cache (denoiser.py)
    StreamCache: every layer's keys and values in one preallocated buffer, written in place (stream_cache.py)
    generate_chunk(dit, StreamState, noise, ...) -> latents, StreamState; PoseFeatureStream (streaming.py)
    ChunkLayout: the sparse rule for queries and keys in different token ranges (iasa/attention/chunk_layout.py)
    StreamDecoder(wan VAE or TAE).decode(latents) -> frames as they are decoded        (stream_decode.py)
    live_keypoints(speech, LiveProceduralMotion, ...); StreamInputs: poses and pose features as keypoints
    arrive                                                                            (stream_input.py)
    run_stream(StreamInferenceConfig) / stream_frames(keypoint pieces) / stream_clip_frames(keypoints)  (stream_run.py)

Streaming output (model-free; stream_run.py wires them to the chunked generator):
    StreamingVideoWriter(path, fps, size, audio).append(frames) ... close() / write_video (video_io.py)
    PreviewServer(host, port, audio_path, fps).start() / publish(frames) / finish()  (preview_server.py)
    StreamClock().mark_inputs_ready() / mark_frames(n) / summary(video_fps)           (stream_clock.py)
"""
