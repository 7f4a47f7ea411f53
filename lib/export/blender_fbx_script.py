"""Build and export FBX files inside Blender-as-a-module (run by .venv-fbx's python).

Not imported by pbn: :mod:`lib.export.fbx` runs this file as a subprocess with
the interpreter of the separate bpy environment, because bpy pins its own numpy.
Input is a plain .npz (no pickles) that lib/export/fbx.py writes; see there.

Usage: python blender_fbx_script.py INPUT.npz

Rig: one armature per file whose 24 bones all have an identity rest orientation
(every bone points along +y of the armature, roll 0), so a pose bone's
quaternion is exactly the SMPL joint rotation relative to its parent and its
location is the root offset from the rest pose. Data is in the export frame
(y up); the armature object is rotated +90 degrees about x so it stands up in
Blender (z up), and the FBX writer's default axis conversion turns it back to
y up, i.e. the FBX holds the same coordinates as our GLB.
"""
import json
import math
import sys

import bpy
import numpy as np

BONE_LENGTH = 0.05  # display length of the bones, metres


def build_track(inp, k: int) -> None:
    names = [str(n) for n in inp["joint_names"]]
    parents = inp["parents"].astype(int).tolist()
    rest_j = inp[f"t{k}_rest_joints"].astype(float)
    rest_v = inp[f"t{k}_rest_vertices"].astype(float)
    quat = inp[f"t{k}_quat_wxyz"].astype(float)  # (N, 24, 4) w, x, y, z
    root = inp[f"t{k}_root_pos"].astype(float)  # (N, 3)
    faces = inp["faces"].astype(int)
    weights = inp["weights"].astype(float)
    fps = float(inp["fps"])
    name = str(inp[f"t{k}_name"])
    n = quat.shape[0]

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps = max(1, int(round(fps)))
    scene.render.fps_base = scene.render.fps / fps
    scene.frame_start = 0
    scene.frame_end = max(0, n - 1)

    arm_data = bpy.data.armatures.new(f"{name}_skeleton")
    arm = bpy.data.objects.new(f"{name}_skeleton", arm_data)
    scene.collection.objects.link(arm)
    arm.rotation_euler = (math.pi / 2, 0.0, 0.0)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    bones = []
    for j, bname in enumerate(names):
        eb = arm_data.edit_bones.new(bname)
        eb.head = rest_j[j].tolist()
        eb.tail = (rest_j[j] + np.array([0.0, BONE_LENGTH, 0.0])).tolist()
        eb.roll = 0.0
        bones.append(eb)
    for j, p in enumerate(parents):
        if p >= 0:
            bones[j].parent = bones[p]
            bones[j].use_connect = False
    bpy.ops.object.mode_set(mode="OBJECT")

    me = bpy.data.meshes.new(f"{name}_body")
    me.from_pydata(rest_v.tolist(), [], faces.tolist())
    me.update()
    me.polygons.foreach_set("use_smooth", [True] * len(me.polygons))
    body = bpy.data.objects.new(f"{name}_body", me)
    scene.collection.objects.link(body)
    body.parent = arm
    for j, bname in enumerate(names):
        vg = body.vertex_groups.new(name=bname)
        for v in np.nonzero(weights[:, j] > 0)[0].tolist():
            vg.add([v], float(weights[v, j]), "REPLACE")
    mod = body.modifiers.new("Armature", "ARMATURE")
    mod.object = arm

    for pb in arm.pose.bones:
        pb.rotation_mode = "QUATERNION"
    arm.animation_data_create()
    action = bpy.data.actions.new(f"{name}_motion")
    frames = np.arange(n, dtype=float)

    def curve(path: str, index: int, values: np.ndarray, group: str) -> None:
        fc = action.fcurves.new(path, index=index, action_group=group)
        fc.keyframe_points.add(n)
        fc.keyframe_points.foreach_set("co", np.stack([frames, values], 1).ravel().tolist())
        for kp in fc.keyframe_points:
            kp.interpolation = "LINEAR"
        fc.update()

    for j, bname in enumerate(names):
        for i in range(4):
            curve(f'pose.bones["{bname}"].rotation_quaternion', i, quat[:, j, i], bname)
    loc = root - rest_j[0][None]
    for i in range(3):
        curve(f'pose.bones["{names[0]}"].location', i, loc[:, i], names[0])
    # Assign after the curves exist; Blender >= 4.4 also needs the action's slot.
    arm.animation_data.action = action
    if getattr(arm.animation_data, "action_slot", "n/a") is None and len(action.slots):
        arm.animation_data.action_slot = action.slots[0]
    scene.frame_set(0)


def export(path: str) -> None:
    if not hasattr(bpy.ops.export_scene, "fbx"):
        import addon_utils

        addon_utils.enable("io_scene_fbx", default_set=True)
    bpy.ops.export_scene.fbx(
        filepath=path,
        use_selection=False,
        object_types={"ARMATURE", "MESH"},
        add_leaf_bones=False,
        primary_bone_axis="Y",
        secondary_bone_axis="X",
        axis_forward="-Z",
        axis_up="Y",
        armature_nodetype="NULL",
        mesh_smooth_type="FACE",
        use_armature_deform_only=False,
        bake_anim=True,
        bake_anim_use_all_bones=True,
        bake_anim_use_nla_strips=False,
        bake_anim_use_all_actions=False,
        bake_anim_force_startend_keying=True,
        bake_anim_step=1.0,
        bake_anim_simplify_factor=0.0,
    )


def main() -> int:
    inp = np.load(sys.argv[1], allow_pickle=False)
    outputs = json.loads(str(inp["outputs"]))
    for k, out in enumerate(outputs):
        build_track(inp, k)
        export(out)
        print(f"pbn-fbx: wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
