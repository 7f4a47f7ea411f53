"""Body models in the SMPL file format behind one stateless layer."""
from lib.body_models.layer import BodyModelLayer, BodyModelOutput  # noqa: F401
from lib.body_models.loading import BODY_MODEL_KINDS, BodyModelNotFound, load_body_model  # noqa: F401
