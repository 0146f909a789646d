# Production preset from study 'video_fast', trial #17 (searched); verified by harness.select on held-out seeds.
# expected_time = median wall time re-measured on held-out seeds [100, 101] (2 prompt(s), 3 repeat(s), spread 4.2%) with model 'toy' on cpu: 0.5085 s (baseline 0.8572 s); search time was 0.4995 s.
# Output: 480x832, 81 frames, 5.06 s
# clip_score >= 0.95 x baseline: 89 on held-out seeds
# psnr_db >= 30: 31.7 on held-out seeds
# Chosen over the fastest feasible trial #11 (0.4882 s, PSNR 31.6 dB on the search's seeds): within search.select.noise=0.05 of it and more faithful to the baseline's video (PSNR 32.7 dB).
'video_fast': {
    'task': 't2v-1.3B',
    'size': '480*832',
    'sample_steps': 11,
    'sample_guide_scale': 6.5,
    'sample_solver': 'dpm++',
    'sample_shift': 3.5,
    'frame_num': 81,
    'enhance_prompt': False,
    'expected_time': 0.509,
    'content_type': 'video',
    'file_extension': 'mp4',
},
