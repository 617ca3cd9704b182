"""Generative baselines of the GFVC CTC: ports of the published models on the suite's codec template.

FOMM (Siarohin et al., NeurIPS 2019), MRAA (Siarohin et al., CVPR 2021),
FV2V (Wang et al., CVPR 2021), TPSM (Zhao & Zhang, CVPR 2022), CFTE (Chen et
al., DCC 2022), LIA (Wang et al., ICLR 2022), MTTF, IMT (PCS 2025) and IHVC
(ICIP 2025). Module and parameter names equal the official checkpoints, so an
official checkpoint file loads strictly; numerics are checked against the
authors' code with conformance vectors (:mod:`baselines.conformance`,
``gfvc conformance``). See docs/baselines.md.

Layout: :mod:`.checkpoint` (official checkpoint files), :mod:`.base`
(``BaselineCodec``), :mod:`.conformance` (test vectors), one module per model.
"""
from __future__ import annotations
