"""The torch side of composer: every ``nn.Module`` a Plan's parts build, mirroring the config packages
(``nn/mixers/<family>.py`` beside ``mixers/<family>.py``, ``nn/macro``, ``nn/channel``, ``nn/parts.py``) and the
shared layers (``nn/layers.py``). Nothing outside ``build`` imports it, so specs, Plans and estimates need no
torch."""
