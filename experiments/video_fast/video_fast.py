# Production preset from study 'video_fast', trial #22 (searched); verified by harness.select on held-out seeds.
# expected_time = median wall time re-measured on held-out seeds [100, 101] (2 prompt(s), 3 repeat(s), spread 2.7%) with model 'toy' on cpu: 0.4402 s (baseline 0.5998 s); search time was 0.4429 s.
# Output: 480x832, 81 frames, 5.06 s
# clip_score >= 0.95 x baseline: 90.3 on held-out seeds
# psnr_db >= 30: 37.4 on held-out seeds
'video_fast': {
    'task': 't2v-1.3B',
    'size': '480*832',
    'sample_steps': 15,
    'sample_guide_scale': 6.5,
    'sample_solver': 'dpm++',
    'sample_shift': 5.0,
    'frame_num': 81,
    'enhance_prompt': False,
    'expected_time': 0.44,
    'content_type': 'video',
    'file_extension': 'mp4',
},
