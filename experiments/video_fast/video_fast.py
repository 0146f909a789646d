# Production preset from study 'video_fast', trial #9 (searched); verified by harness.select on held-out seeds.
# expected_time = median wall time re-measured on held-out seeds [100, 101] (2 prompt(s), 3 repeat(s), spread 2.4%) with model 'toy' on cpu: 0.4289 s (baseline 0.6936 s); search time was 0.4257 s.
# Output: 480x832, 81 frames, 5.06 s
# clip_score >= 0.95 x baseline: 90.1 on held-out seeds
# psnr_db >= 30: 33.4 on held-out seeds
# Chosen over the fastest feasible trial #10 (0.4118 s, PSNR 31.6 dB): within search.select.noise=0.05 of it and more faithful to the baseline's video (PSNR 34.3 dB).
'video_fast': {
    'task': 't2v-1.3B',
    'size': '480*832',
    'sample_steps': 12,
    'sample_guide_scale': 6.5,
    'sample_solver': 'dpm++',
    'sample_shift': 4.0,
    'frame_num': 81,
    'enhance_prompt': False,
    'expected_time': 0.429,
    'content_type': 'video',
    'file_extension': 'mp4',
},
