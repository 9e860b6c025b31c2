"""`python -m nbhelpers.train lora|dreambooth ...`, also under `accelerate launch -m` and `torchrun -m`."""

import sys

from nbhelpers.train.cli import main

sys.exit(main())
