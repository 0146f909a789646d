# Production preset from study 'video_fast', trial #19 (searched); verified by harness.select on held-out seeds.
# Paired speed-up on held-out seeds: 1.62x [1.51, 1.79] (95% interval; 12 pairs, the baseline generated beside each video in alternating order: 0.7566 s against 0.4474 s).
# expected_time = median wall time re-measured on held-out seeds [100, 101] (2 prompt(s), 3 repeat(s), spread 8.0%) with model 'toy' on cpu: 0.4441 s; search time was 0.4665 s.
# Measured for the official Wan 2.1 code (worker=official): its negative prompt, noise schedule, noise generator, precision, guidance passes and pixel conversion.
# Output: 480x832, 81 frames, 5.06 s
# clip_score >= 0.95 x baseline: 90.1 on held-out seeds
# psnr_db >= 30: 30.3 on held-out seeds
# Chosen over the fastest feasible trial #9 (0.4524 s, PSNR 31.4 dB on the search's seeds): within search.select.noise=0.05 of it and more faithful to the baseline's video (PSNR 31.5 dB).
'video_fast': {
    'task': 't2v-1.3B',
    'size': '480*832',
    'sample_steps': 11,
    'sample_guide_scale': 6.5,
    'sample_solver': 'dpm++',
    'sample_shift': 5.0,
    'frame_num': 81,
    'enhance_prompt': False,
    'expected_time': 0.444,
    'content_type': 'video',
    'file_extension': 'mp4',
},
