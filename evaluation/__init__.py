"""Evaluation of PyraTok tokenizers: reconstruction, zero-shot segmentation, action localization and retrieval.

Modules:
    clips: deterministic reading of WebDataset eval shards (`EvalClip`, `iter_clips`) and annotation loaders.
    semantic: the shared code/text semantic space (DESIGN §4): codes, token / text embeddings, similarities.
    metrics: PSNR-free task metrics (temporal IoU, ActivityNet mAP, mask IoU, DAVIS J, mask AP, recall@k).
    reconstruction, localization, retrieval: the evaluators; `cli`: the `pyratok-eval` command.

Submodules are imported on use (`from pyratok.evaluation.metrics import detection_map`), so importing the package
stays cheap.
"""
