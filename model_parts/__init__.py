"""Model parts shared by the generative models (Sparse2Dense in :mod:`s2d_model`, the baselines in
:mod:`baselines`), so that neither model package imports the other.

:mod:`.data` (datasets of video frames), :mod:`.losses` (perceptual VGG19 pyramid, hinge GAN, feature
matching), :mod:`.checkpoint` (reading and writing torch files and checkpoints with clear errors),
:mod:`.training` (the training loop and the recipe contract), :mod:`.overlay` (vertex drawing),
:mod:`.proxy_vertices` (the labelled PROXY vertex tracks of the demo).
"""
