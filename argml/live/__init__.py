"""The live demo: a webcam (or a video, an image, a folder of images) through YOLO face tracking, alignment and
the classifier, each person's answers pooled over time, labels drawn on the frame.

- capture: frame sources (a webcam thread that keeps only the newest frame, files in order);
- workers: the classifier in its own thread, one batch in flight (or inline);
- pooling: each tracked person's answers averaged over time, forgotten when they leave;
- render: labels drawn on the frame, one JSONL record per frame;
- loop: the main loop (`run(LiveOptions(...))`);
- demo: the pipeline's demo stage (a clip made from test-split faces, played through the loop inline);
- synthetic: test, benchmark and demo videos of real faces walking across a scene.

`python -m argml.live --help` (or `argml live --help`).
"""
