"""Export of demo results: animated GLB, FBX (via bpy), OBJ sequences and BVH."""
from lib.export.common import EXPORT_FORMATS, load_results  # noqa: F401
from lib.export.exporter import export_results, export_results_from_config  # noqa: F401
