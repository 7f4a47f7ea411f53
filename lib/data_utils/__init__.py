"""Offline data preparation: one converter per raw dataset (pw3d, mpii3d, h36m, insta,
penn_action, posetrack, amass, vibe_db; see registry.CONVERTERS), synthetic data and
videos, and backbone feature extraction. All write the schema of lib.dataset."""
