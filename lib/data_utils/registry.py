"""The converters by name, behind one call: raw dataset folder -> schema folder(s)."""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Dict, List, Optional

from lib.data_utils.common import ConverterError

logger = logging.getLogger(__name__)

# name -> (module, default split, splits written by split "all" or None)
CONVERTERS: Dict[str, tuple] = {
    "3dpw": ("lib.data_utils.pw3d", "test", ("train", "val", "test")),
    "mpi_inf_3dhp": ("lib.data_utils.mpii3d", "train", ("train", "test")),
    "h36m": ("lib.data_utils.h36m", "train", ("train", "test")),
    "insta": ("lib.data_utils.insta", "train", ("train", "test")),
    "penn_action": ("lib.data_utils.penn_action", "all", None),
    "posetrack": ("lib.data_utils.posetrack", "train", ("train", "val")),
    "amass": ("lib.data_utils.amass", "train", None),
    "vibe_db": ("lib.data_utils.vibe_db", "all", None),
}


def prepare(name: str, raw_dir: str, out_dir: str, split: Optional[str] = None, body_model=None,
            frame_step: Optional[int] = None) -> List[Path]:
    """Convert ``raw_dir`` of dataset ``name`` into ``out_dir/<name>/<split>``.

    ``split`` None = the converter's default; "all" = every split it knows.
    Returns the written folders.
    """
    from lib.dataset.schema import write_dataset

    if name not in CONVERTERS:
        raise ConverterError(f"unknown dataset {name!r}; choose one of {', '.join(CONVERTERS)}")
    mod_name, default_split, all_splits = CONVERTERS[name]
    mod = importlib.import_module(mod_name)
    split = split or default_split
    if name == "vibe_db":
        written = []
        for path, ds, sp in mod.find_dbs(raw_dir, split):
            fields = mod.convert_db(mod.load_db(path), str(path))
            meta = {"source": ds, "split": sp, "fps": mod.FPS.get(ds, 30.0), "raw_root": "",
                    "note": f"imported from VIBE database {path.name}"}
            written.append(write_dataset(Path(out_dir) / ds / sp, fields, meta))
        return written
    splits = list(all_splits) if split == "all" and all_splits else [split]
    written = []
    for sp in splits:
        kwargs = {}
        if name == "3dpw":
            kwargs["body_model"] = body_model
        if frame_step is not None and (name == "h36m" or (name == "mpi_inf_3dhp" and sp == "train")):
            kwargs["frame_step"] = frame_step
        fields = mod.convert(raw_dir, sp, **kwargs)
        meta = dict(mod.META, split=sp, raw_root=str(Path(raw_dir).resolve()))
        step = kwargs.get("frame_step", 5 if name == "h36m" else 1)  # h36m keeps every 5th frame by default
        meta["fps"] = float(meta["fps"]) / step
        meta["frame_step"] = step
        written.append(write_dataset(Path(out_dir) / name / sp, fields, meta))
        logger.info("%s %s: %d frames", name, sp, len(fields["vid_name"]))
    return written
