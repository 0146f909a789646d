# Production preset from study 'video_fast', trial #9 (searched); verified by harness.select on held-out seeds.
# Paired speed-up on held-out seeds: 1.77x [1.69, 2.05] (95% interval; 12 pairs, the baseline generated beside each video in alternating order: 1.241 s against 0.6368 s).
# expected_time = median wall time re-measured on held-out seeds [100, 101] (2 prompt(s), 3 repeat(s), spread 12.4%) with model 'toy' on cpu: 0.6274 s; search time was 0.4787 s.
# Measured for the official Wan 2.1 code (worker=official): its negative prompt, noise schedule, noise generator, precision, guidance passes and pixel conversion.
# Output: 480x832, 81 frames, 5.06 s
# clip_score >= 0.95 x baseline: 88.7 on held-out seeds
# psnr_db >= 30: 30.7 on held-out seeds
# PSNR beside its noise floor (the baseline against itself): cfg=batched 95.0 dB, precision=bfloat16 47.5 dB, attention=_native_math 93.3 dB (measured by harness.audit)
'video_fast': {
    'task': 't2v-1.3B',
    'size': '480*832',
    'sample_steps': 11,
    'sample_guide_scale': 6.5,
    'sample_solver': 'dpm++',
    'sample_shift': 4.0,
    'frame_num': 81,
    'enhance_prompt': False,
    'expected_time': 0.627,
    'content_type': 'video',
    'file_extension': 'mp4',
},
