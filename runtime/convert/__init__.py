"""Exporters of a run folder to interchange formats: glTF binary (glb.py), COLMAP text (colmap.py), BVH (bvh.py).

Torch-free and numpy-only; run_folder.py reads what a (possibly interrupted) run wrote, body.py holds the SMPL-X
rest shape and forward kinematics they share.
"""
