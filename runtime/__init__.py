"""Torch-free runtime: streams frames through exported engines, owns the recurrent state, skins SMPL-X."""
